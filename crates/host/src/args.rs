//! The command line every service shares: the runtime's node flags (each with its
//! environment variable, see `runtime::config`) and the persistence backend.

use std::path::PathBuf;

use runtime::config::ConfigError;

/// Flags of every service binary; flatten it into the binary's clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Node settings (cluster address, seeds, roles, management port, ...).
    #[command(flatten)]
    pub node: runtime::NodeArgs,
    /// Folder of the embedded SQLite journal, used when no MongoDB is configured.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// SQLite durability: `full` syncs every commit to disk; `normal` survives a process
    /// crash but may lose the last commits in a power cut, and is much faster.
    #[arg(long, env = "SQLITE_SYNC", default_value = "full", value_parser = ["full", "normal"])]
    pub sqlite_sync: String,
    /// MongoDB connection string (`mongodb://host:27017/akkaTrader`); when set, events and
    /// snapshots go to MongoDB instead of SQLite.
    #[arg(long, env = "MONGO_CONNECTION_STR", hide_env_values = true)]
    pub mongo: Option<String>,
}

/// Where a process keeps its events and snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite database `journal.db` in this folder.
    Sqlite {
        /// The folder.
        dir: PathBuf,
        /// Sync every commit to disk (`FULL`), or let the WAL reach the disk in its own time
        /// (`NORMAL`: a process crash loses nothing, a power cut may lose the last commits).
        sync_full: bool,
    },
    /// A MongoDB server.
    Mongo(String),
}

impl HostArgs {
    /// The persistence backend the flags ask for, checked.
    pub fn store(&self) -> Result<StoreConfig, ConfigError> {
        match self.mongo.as_deref().map(str::trim) {
            Some(uri) if !uri.is_empty() => {
                if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
                    Ok(StoreConfig::Mongo(uri.to_string()))
                } else {
                    Err(ConfigError {
                        variable: "MONGO_CONNECTION_STR",
                        flag: "--mongo",
                        value: "<hidden>".into(),
                        reason: "must start with mongodb:// or mongodb+srv://".into(),
                    })
                }
            }
            _ => {
                if self.data_dir.as_os_str().is_empty() {
                    return Err(ConfigError {
                        variable: "DATA_DIR",
                        flag: "--data-dir",
                        value: String::new(),
                        reason: "must name a folder".into(),
                    });
                }
                Ok(StoreConfig::Sqlite {
                    dir: self.data_dir.clone(),
                    sync_full: self.sqlite_sync != "normal",
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        host: HostArgs,
    }

    #[test]
    fn sqlite_is_the_default_and_mongo_is_checked() {
        // `--mongo ""` keeps a MONGO_CONNECTION_STR in the test's environment out of it.
        let cli = Cli::parse_from(["x", "--data-dir", "/tmp/d", "--mongo", ""]);
        assert_eq!(
            cli.host.store().unwrap(),
            StoreConfig::Sqlite {
                dir: "/tmp/d".into(),
                sync_full: true
            }
        );
        let cli = Cli::parse_from(["x", "--mongo", "mongodb://m:27017/akkaTrader"]);
        assert_eq!(
            cli.host.store().unwrap(),
            StoreConfig::Mongo("mongodb://m:27017/akkaTrader".into())
        );
        let cli = Cli::parse_from(["x", "--mongo", "http://nope"]);
        let e = cli.host.store().unwrap_err();
        assert_eq!(e.variable, "MONGO_CONNECTION_STR");
    }
}
