//! The start sequence every service `main` shares: check the configuration (a wrong value
//! stops the start with a message that names its variable, exit code 2), open the store when
//! the service persists (exit code 1 when it cannot), and start the service node.

use runtime::ServiceDefaults;

use crate::args::HostArgs;
use crate::service::ServiceNode;
use crate::stores::Stores;

/// Why a service did not start, with the exit code it should end with.
#[derive(Debug)]
pub struct StartFailure {
    /// 2 for a configuration error, 1 otherwise.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl StartFailure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        StartFailure {
            code: 1,
            message: message.into(),
        }
    }

    /// A configuration error (exit code 2) naming the variable and flag that hold it.
    pub fn config(variable: &str, flag: &str, error: impl std::fmt::Display) -> Self {
        StartFailure {
            code: 2,
            message: format!("{variable} ({flag}): {error}"),
        }
    }

    /// Prints the message and exits the process with the code.
    pub fn exit(self) -> ! {
        eprintln!("error: {}", self.message);
        std::process::exit(self.code)
    }
}

/// Resolves the configuration, opens the store if `persistent`, and starts the node.
pub async fn start_service(
    args: &HostArgs,
    defaults: &ServiceDefaults,
    persistent: bool,
) -> Result<(ServiceNode, Option<Stores>), StartFailure> {
    let config = args.node.resolve(defaults).map_err(|e| StartFailure {
        code: 2,
        message: e.to_string(),
    })?;
    let stores = if persistent {
        let store = args.store().map_err(|e| StartFailure {
            code: 2,
            message: e.to_string(),
        })?;
        let stores = Stores::open(&store)
            .await
            .map_err(|e| StartFailure::new(format!("cannot open the journal: {e}")))?;
        tracing::info!(store = %stores.description, "journal opened");
        Some(stores)
    } else {
        None
    };
    let node = ServiceNode::start(config)
        .await
        .map_err(|e| StartFailure::new(e.to_string()))?;
    Ok((node, stores))
}
