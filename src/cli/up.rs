//! `precursor up` (data plane + control plane, supervised) and `precursor controlplane`
//! (the control plane alone, attached to a data plane started elsewhere).

use anyhow::Result;
use precursor_config::Config;
use precursor_controlplane::Mode;
use std::path::PathBuf;
use std::process::ExitCode;

/// `precursor up [--config F]`.
pub fn up(config_path: Option<PathBuf>) -> Result<ExitCode> {
    let config = load(config_path.as_deref())?;
    let dataplane_binary = super::dataplane_binary();
    precursor_controlplane::run(config, config_path, Mode::Supervise { dataplane_binary })?;
    Ok(ExitCode::SUCCESS)
}

/// `precursor controlplane [--config F]`.
pub fn controlplane(config_path: Option<PathBuf>) -> Result<ExitCode> {
    let config = load(config_path.as_deref())?;
    precursor_controlplane::run(config, config_path, Mode::Attach)?;
    Ok(ExitCode::SUCCESS)
}

fn load(path: Option<&std::path::Path>) -> Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}
