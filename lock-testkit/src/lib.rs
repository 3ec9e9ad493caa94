#![doc = include_str!("../README.md")]

pub mod history;
pub mod process;
pub mod redis;
