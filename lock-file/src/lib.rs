#![doc = include_str!("../README.md")]

mod backend;
mod file_name;
mod flock;
mod io_error;
mod lease_file;
mod lock_dir;
mod options;
mod peek;
mod record;
mod written;

pub use backend::{DRIVER, FileBackend, connect};
pub use options::{FileOptions, URL_SCHEMES};
