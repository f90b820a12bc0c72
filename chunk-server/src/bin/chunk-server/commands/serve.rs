use std::process::ExitCode;

use anyhow::Result;
use chunk_server::serve::{ConnectionLimits, ServeOptions};

use crate::cli::ServeArgs;

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let ServeArgs {
        dir,
        listen,
        tls_cert,
        tls_key,
        access_log,
        header_timeout,
        idle_timeout,
        max_connections,
    } = args;
    let options = ServeOptions {
        root: dir,
        listen,
        tls_cert,
        tls_key,
        access_log,
        limits: ConnectionLimits {
            header_timeout,
            idle_timeout,
            max_connections: max_connections as usize,
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(chunk_server::serve::serve(options))?;
    Ok(ExitCode::SUCCESS)
}
