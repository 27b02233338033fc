//! s3nap: streaming, encrypted, rotating backups into S3.
//!
//! Layers, from the bottom up: `schema` (what is stored), `atomic` / `process` (one way to
//! replace a file, one way to run a child), `store` (where it goes), `policy` (pure decisions),
//! `pipeline` (the streaming stages), `source` (what is read), `config` (file → typed
//! settings), `backup` / `recover` / `bucket` (one run, one recovery, orchestrated), `commands`
//! (parse, call, print). docs/ARCHITECTURE.md describes each layer, what it may use, the
//! storage formats and the failure rules; README what s3nap does for a user.

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
pub mod quilt;
pub mod recover;
pub mod report;
pub mod schema;
pub mod source;
pub mod store;
pub mod tarstream;
pub mod uploads;
pub mod verify;
