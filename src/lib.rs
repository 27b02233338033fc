//! s3nap: streaming, encrypted, rotating backups into S3.
//!
//! Layers, from the outside in: `config` (file → typed settings), `backup` / `recover` (one
//! run or one recovery, orchestrated), `pipeline` (the streaming stages), `source` (what is
//! read), `store` (where it goes), with `layout`, `manifest` and `catalog` describing what is
//! stored. README describes what each of them does for a user.

pub mod atomic;
pub mod backup;
pub mod bucket;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connect;
pub mod error;
pub mod keys;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod process;
pub mod progress;
pub mod prune;
pub mod recover;
pub mod report;
pub mod schema;
pub mod source;
pub mod store;
pub mod tarstream;
pub mod uploads;
