#![doc = include_str!("../README.md")]

mod backend;
pub mod history;
pub mod postgres;
pub mod process;
pub mod redis;

pub use backend::Backend;
