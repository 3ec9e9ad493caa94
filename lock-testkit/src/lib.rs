#![doc = include_str!("../README.md")]

mod backend;
pub mod history;
pub mod process;
pub mod redis;

pub use backend::Backend;
