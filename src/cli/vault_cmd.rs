//! `shelldone secret …`, `shelldone key …` and `shelldone vault …`: the secret vault and the
//! device keys (docs/keys.md). Values and passphrases never come from the command line: from
//! standard input, `SHELLDONE_VAULT_PASSPHRASE`, or a prompt without echo on the terminal.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use age::secrecy::ExposeSecret;
use serde::Serialize;

use super::args::{BackendArg, Cli, KeyCmd, SecretCmd, VaultCmd};
use super::open::{config, open};
use super::output::say;
use super::{documents, out};
use crate::vault::{self, Backend, KeyringStore, Unlock};
use crate::{Error, Result};

/// The variable a script or CI sets to the vault passphrase.
const PASSPHRASE_VAR: &str = "SHELLDONE_VAULT_PASSPHRASE";

/// The unlock the commands use: the variable, else a prompt without echo on the terminal (for
/// a new passphrase, asked twice). `prompt: false` (`vault status`) never asks.
pub(super) fn unlock(prompt: bool) -> Unlock {
    Unlock {
        passphrase: Some(Box::new(move |what: &str| ask_passphrase(prompt, what))),
    }
}

/// The passphrase: `SHELLDONE_VAULT_PASSPHRASE`, else (with `prompt`, on a terminal) asked
/// for without echo.
pub(super) fn ask_passphrase(prompt: bool, what: &str) -> Result<String> {
    if let Some(v) = std::env::var_os(PASSPHRASE_VAR) {
        return v
            .into_string()
            .map_err(|_| Error::Usage(format!("{PASSPHRASE_VAR} is not valid UTF-8")));
    }
    if !prompt || !std::io::stderr().is_terminal() {
        return Err(Error::VaultLocked(format!(
            "{what} needs the vault passphrase: set {PASSPHRASE_VAR} or run on a terminal"
        )));
    }
    let ask = |p: &str| {
        rpassword::prompt_password(p)
            .map_err(|e| Error::VaultLocked(format!("cannot read the passphrase: {e}")))
    };
    let first = ask(&format!("vault passphrase ({what}): "))?;
    if what.starts_with("a new") {
        let again = ask("the same passphrase again: ")?;
        if again != first {
            return Err(Error::Usage("the two passphrases differ".into()));
        }
    }
    Ok(first)
}

/// The backend for new keys, and the keyring store when one is forced: the option, else
/// `vault.backend`, else the passphrase (the kernel keyring forgets its keys at reboot, so it
/// is never chosen silently).
fn backend(arg: Option<BackendArg>) -> Result<(Backend, Option<KeyringStore>)> {
    match arg {
        Some(BackendArg::Keyring) => Ok((Backend::Keyring, None)),
        Some(BackendArg::SecretService) => {
            Ok((Backend::Keyring, Some(KeyringStore::SecretService)))
        }
        Some(BackendArg::Keyutils) => Ok((Backend::Keyring, Some(KeyringStore::Keyutils))),
        Some(BackendArg::Passphrase) => Ok((Backend::Passphrase, None)),
        None => match config().vault_backend.as_deref() {
            Some("secret-service") => Ok((Backend::Keyring, Some(KeyringStore::SecretService))),
            Some("keyutils") => Ok((Backend::Keyring, Some(KeyringStore::Keyutils))),
            Some(name) => Backend::parse(name).map(|b| (b, None)),
            None => Ok((Backend::Passphrase, None)),
        },
    }
}

/// `keyring (Secret Service)`, `keyring (kernel keyutils)` or `passphrase`.
fn backend_label(rec: &vault::DeviceRecord) -> String {
    match rec.keyring_store() {
        Some(s) => format!("{} ({})", rec.backend.name(), s.label()),
        None => rec.backend.name().to_owned(),
    }
}

/// A value from standard input (one trailing newline dropped), or asked for without echo.
fn read_value(what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    if std::io::stdin().is_terminal() {
        let s = rpassword::prompt_password(format!("{what}: "))
            .map_err(|e| Error::Usage(format!("cannot read {what}: {e}")))?;
        v = s.into_bytes();
    } else {
        std::io::stdin().read_to_end(&mut v)?;
        if v.last() == Some(&b'\n') {
            v.pop();
            if v.last() == Some(&b'\r') {
                v.pop();
            }
        }
    }
    Ok(v)
}

/// `secret list --json`.
#[derive(Debug, Serialize)]
struct SecretList<'a> {
    secrets: &'a [String],
}

/// `secret set|get|list|rm`.
pub(super) fn secret(cli: &Cli, c: &SecretCmd) -> Result<ExitCode> {
    let st = open(cli)?;
    let cx = st.context();
    match c {
        SecretCmd::Set { name } => {
            vault::check_name(name, "secret")?;
            let value = read_value(&format!("value of secret '{name}'"))?;
            vault::secret_set(cx, name, &value, &unlock(true))?;
            say(format!(
                "secret '{name}' set ({} bytes, encrypted to {} recipient(s))",
                value.len(),
                vault::recipients(cx)?.len()
            ));
        }
        SecretCmd::Get { name } => {
            let v = vault::secret_get(cx, name, &unlock(true))?;
            let mut o = std::io::stdout().lock();
            o.write_all(&v)?;
            if std::io::stdout().is_terminal() {
                o.write_all(b"\n")?;
            }
            o.flush()?;
        }
        SecretCmd::List => {
            let names = vault::secret_list(cx)?;
            if cli.json {
                documents::print(&SecretList { secrets: &names })?;
            } else {
                for n in names {
                    out(n);
                }
            }
        }
        SecretCmd::Rm { name } => {
            if vault::secret_rm(cx, name)? {
                say(format!("secret '{name}' removed"));
            } else {
                return Err(Error::Usage(format!(
                    "no secret '{name}' in the vault; 'shelldone secret list' lists them"
                )));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `key show --json`.
#[derive(Debug, Serialize)]
struct KeyShow<'a> {
    device: &'a str,
    backend: &'a str,
    age: &'a str,
    ssh: &'a str,
}

/// `key import --remote --json`.
#[derive(Debug, Serialize)]
struct Recovered<'a> {
    remote: &'a str,
    received: crate::remote::TransferStats,
    devices: &'a [String],
    head: Option<&'a str>,
    device_age: &'a str,
    rekeyed: usize,
    rewrapped: bool,
}

/// `key list --json`.
#[derive(Debug, Serialize)]
struct KeyList<'a> {
    devices: &'a [vault::TrustEntry],
    paper_key: Option<String>,
}

/// `key init|show|trust|list|revoke|export|import`.
pub(super) fn key(cli: &Cli, c: &KeyCmd) -> Result<ExitCode> {
    let st = open(cli)?;
    let cx = st.context();
    match c {
        KeyCmd::Init { backend: b, force } => {
            let (b, store) = backend(*b)?;
            let done = vault::init(cx, b, store, &unlock(true), *force)?;
            say(format!(
                "made this device's keys ({} backend); trust it on your other devices with:\n  shelldone key trust {} {} {}",
                backend_label(&done.record),
                done.record.name,
                done.record.age,
                strip_comment(&done.record.ssh)
            ));
        }
        KeyCmd::Show => {
            let rec = vault::keys::require_record(cx)?;
            if cli.json {
                documents::print(&KeyShow {
                    device: &rec.name,
                    backend: rec.backend.name(),
                    age: &rec.age,
                    ssh: &rec.ssh,
                })?;
            } else {
                out(&rec.age);
                out(&rec.ssh);
            }
        }
        KeyCmd::Trust { name, pubkeys } => {
            let (e, n) = vault::trust(cx, name, pubkeys, &unlock(true))?;
            say(format!(
                "trusted '{}' ({}); re-encrypted {n} secret(s) to include it",
                e.name, e.age
            ));
        }
        KeyCmd::List => {
            let list = vault::trust_list(cx)?;
            let paper = vault::paper_recipient(cx)?.map(|r| r.to_string());
            if cli.json {
                documents::print(&KeyList {
                    devices: &list,
                    paper_key: paper,
                })?;
            } else {
                for e in &list {
                    out(format!(
                        "{}{}  {}  {}",
                        e.name,
                        if e.revoked { " (revoked)" } else { "" },
                        e.age,
                        strip_comment(&e.ssh)
                    ));
                }
                if let Some(p) = paper {
                    out(format!("paper key  {p}"));
                }
            }
        }
        KeyCmd::Revoke { name } => {
            let n = vault::revoke(cx, name, &unlock(true))?;
            say(format!(
                "revoked '{name}'; re-encrypted {n} secret(s) without it. It keeps what it already read: change those secrets"
            ));
        }
        KeyCmd::Export { paper: _ } => {
            let p = vault::export_paper(cx, &unlock(true))?;
            out(
                "Paper recovery key: write it down and keep it safe; anyone who has it can read the vault.",
            );
            out("(Spaces and dashes do not matter when you type it back.)");
            out("");
            for l in vault::paper_lines(&p.identity) {
                out(format!("  {l}"));
            }
            out("");
            out(format!("  whole: {}", p.identity.expose_secret()));
            say(format!(
                "its recipient {} is now included in every encryption; re-encrypted {} secret(s). Restore with 'shelldone key import' on a new device. A paper key made before no longer receives new secrets.",
                p.recipient, p.rekeyed
            ));
        }
        KeyCmd::Import { backend: b, remote } => return import(cli, cx, *b, remote.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

fn import(
    cli: &Cli,
    cx: &crate::context::Context,
    b: Option<BackendArg>,
    remote: Option<&str>,
) -> Result<ExitCode> {
    let paper = String::from_utf8(read_value("paper recovery key")?)
        .map_err(|_| Error::VaultLocked("the paper key is not text".into()))?;
    let (b, store) = backend(b)?;
    let done = if let Some(remote) = remote {
        let t = super::progress::Transfer::new("pull");
        let cb = |done: u64, total: Option<u64>| t.report(done, total);
        let r = crate::sync::recover(cx, remote, &paper, b, store, &unlock(true), &cb)?;
        drop(t);
        if cli.json {
            documents::print(&Recovered {
                remote,
                received: r.pull.received,
                devices: &r.pull.devices,
                head: r.pull.head.as_deref(),
                device_age: &r.imported.record.age,
                rekeyed: r.imported.rekeyed,
                rewrapped: r.rewrapped,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        say(format!(
            "pulled from {remote} with the paper key: {} objects ({}), devices: {}{}",
            r.pull.received.objects,
            super::output::bytes(r.pull.received.bytes),
            if r.pull.devices.is_empty() {
                "none".to_owned()
            } else {
                r.pull.devices.join(", ")
            },
            if r.rewrapped {
                "; its key file now opens with this device's keys".to_owned()
            } else {
                String::new()
            }
        ));
        r.imported
    } else {
        vault::import(cx, &paper, b, store, &unlock(true))?
    };
    say(format!(
        "restored access with the paper key: this device's keys are {} ({} backend); re-encrypted {} secret(s) to include it. Push so your other devices learn it",
        done.record.age,
        backend_label(&done.record),
        done.rekeyed
    ));
    Ok(ExitCode::SUCCESS)
}

/// `vault status|unlock`.
pub(super) fn vault(cli: &Cli, c: &VaultCmd) -> Result<ExitCode> {
    let st = open(cli)?;
    let cx = st.context();
    match c {
        VaultCmd::Status => {
            let s = vault::status(cx, &unlock(false))?;
            if cli.json {
                documents::print(&s)?;
            } else {
                let store = s
                    .keyring_store
                    .map(|n| format!(" ({})", n.label()))
                    .unwrap_or_default();
                out(format!(
                    "backend: {}{store}{}",
                    s.backend,
                    match s.keyring_here {
                        Some(h) => format!("; the OS keyring works here: {}", h.label()),
                        None => "; no OS keyring here".to_owned(),
                    }
                ));
                match &s.why {
                    None => out("unlocked: yes"),
                    Some(w) => out(format!("unlocked: no ({w})")),
                }
                if let Some(r) = &s.recipient {
                    out(format!("this device: {r}"));
                }
                out(format!(
                    "secrets: {}, trusted devices: {}, paper key: {}",
                    s.secrets,
                    s.trusted,
                    if s.paper_key { "yes" } else { "none" }
                ));
            }
        }
        VaultCmd::Unlock {
            recovery: _,
            backend: b,
            remote,
        } => return import(cli, cx, *b, remote.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

fn strip_comment(ssh: &str) -> String {
    ssh.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// `[snapshot] redact = true`: installs the redactor for this command's saves, with the vault's
/// secret values (the keys must unlock: a save that cannot redact them is refused rather than
/// made with them in it) and the token shapes.
pub(super) fn install_redactor(st: &crate::State) -> Result<()> {
    let cx = st.context();
    let secrets = if vault::secret_list(cx)?.is_empty() {
        std::collections::BTreeMap::new()
    } else {
        vault::secret_values(cx, &unlock(true)).map_err(|e| {
            Error::VaultLocked(format!(
                "[snapshot] redact is on, but the vault's secrets cannot be read to keep them out of the snapshot (nothing was saved): {e}"
            ))
        })?
    };
    crate::snapshot::redact::install(Some(std::sync::Arc::new(
        crate::snapshot::redact::Redactor::new(secrets),
    )));
    Ok(())
}

/// How many secrets the installed redactor replaced, when one is installed.
pub(super) fn redacted() -> Option<u64> {
    crate::snapshot::redact::active().map(|r| r.count())
}
