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
mod url_config;

pub use backend::{FileBackend, connect};
pub use options::FileOptions;
pub use url_config::URL_SCHEMES;
