//! `shelldone device show` and `shelldone device rename`: this device's name on remotes.

use std::process::ExitCode;

use super::args::{Cli, DeviceCmd};
use super::open::open;
use super::output::say;
use super::{documents, out};
use crate::Result;

/// `device show` and `device rename NAME`.
pub(super) fn run(cli: &Cli, dc: &DeviceCmd) -> Result<ExitCode> {
    let mut st = open(cli)?;
    match dc {
        DeviceCmd::Show => {
            if cli.json {
                documents::print(&documents::Device {
                    device: st.device(),
                })?;
            } else {
                out(st.device());
            }
        }
        DeviceCmd::Rename { name } => {
            let old = st.device().to_owned();
            st.device_rename(name)?;
            if cli.json {
                documents::print(&documents::Renamed {
                    old: &old,
                    new: name,
                })?;
            } else {
                say(format!(
                    "renamed this device '{old}' → '{name}'; the next push writes under the new name, and the next pull merges what '{old}' holds on the remote"
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
