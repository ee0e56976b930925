//! Where an encrypted store's passphrase comes from, in this order:
//! `PAGESNAP_PASSWORD_FILE` (its first line), `PAGESNAP_PASSWORD_COMMAND` (its
//! output's first line), `PAGESNAP_PASSWORD`, else a prompt on the terminal.
//! Never a flag: a flag shows in `ps` and in shell history. Read once per
//! process and kept zeroized: `watch` opens its store again for every run and
//! must not run the command or prompt again.
//!
//! `copy`'s source store has its own: `PAGESNAP_FROM_PASSWORD_FILE`,
//! `PAGESNAP_FROM_PASSWORD_COMMAND`, `PAGESNAP_FROM_PASSWORD` (as restic's
//! `RESTIC_FROM_PASSWORD_*`), else the same sources as the destination's.

use pagesnap_core::Passphrase;
use std::path::Path;
use std::sync::Mutex;

pub const FILE_ENV: &str = "PAGESNAP_PASSWORD_FILE";
pub const COMMAND_ENV: &str = "PAGESNAP_PASSWORD_COMMAND";
pub const VALUE_ENV: &str = "PAGESNAP_PASSWORD";

/// Which store a passphrase is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The store of `--store` (and `copy`'s destination).
    Main,
    /// `copy`'s source.
    From,
}

impl Which {
    fn vars(self) -> [&'static str; 3] {
        match self {
            Which::Main => [FILE_ENV, COMMAND_ENV, VALUE_ENV],
            Which::From => [
                "PAGESNAP_FROM_PASSWORD_FILE",
                "PAGESNAP_FROM_PASSWORD_COMMAND",
                "PAGESNAP_FROM_PASSWORD",
            ],
        }
    }
}

static READ: Mutex<Option<Passphrase>> = Mutex::new(None);
static READ_FROM: Mutex<Option<Passphrase>> = Mutex::new(None);

/// The first line of `bytes`, without its line ending (as restic reads
/// password files: a trailing newline is never part of the passphrase).
fn first_line(bytes: &[u8]) -> Passphrase {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..end];
    Passphrase::new(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

fn from_file(path: &Path) -> Result<Passphrase, String> {
    let bytes =
        Passphrase::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    Ok(first_line(&bytes))
}

fn from_command(var: &str, cmd: &str) -> Result<Passphrase, String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{var}: cannot run it: {e}"))?;
    let stdout = Passphrase::new(out.stdout);
    if !out.status.success() {
        return Err(format!("{var}: the command failed ({})", out.status));
    }
    Ok(first_line(&stdout))
}

fn from_terminal(prompt: &str) -> Result<Passphrase, String> {
    rpassword::prompt_password(prompt)
        .map(|p| Passphrase::new(p.into_bytes()))
        .map_err(|e| {
            format!("no terminal to ask on ({e}); set {FILE_ENV}, {COMMAND_ENV} or {VALUE_ENV}")
        })
}

/// The passphrase the environment gives for `which` store, if it gives one.
fn from_env_for(which: Which) -> Result<Option<Passphrase>, String> {
    let [file, command, value] = which.vars();
    if let Some(f) = std::env::var_os(file).filter(|f| !f.is_empty()) {
        return from_file(Path::new(&f)).map(Some);
    }
    if let Ok(c) = std::env::var(command) {
        if !c.is_empty() {
            return from_command(command, &c).map(Some);
        }
    }
    Ok(std::env::var(value)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| Passphrase::new(v.into_bytes())))
}

fn from_env() -> Result<Option<Passphrase>, String> {
    from_env_for(Which::Main)
}

fn lock(
    m: &Mutex<Option<Passphrase>>,
) -> Result<std::sync::MutexGuard<'_, Option<Passphrase>>, String> {
    m.lock().map_err(|_| "passphrase lock poisoned".to_string())
}

/// The passphrase of the store at `location` (read once per process).
pub fn current(location: &str) -> Result<Passphrase, String> {
    let mut read = lock(&READ)?;
    if let Some(p) = &*read {
        return Ok(p.clone());
    }
    let p = match from_env()? {
        Some(p) => p,
        None => from_terminal(&format!("passphrase for {location}: "))?,
    };
    *read = Some(p.clone());
    Ok(p)
}

/// The passphrase of `which` store, at `location` (read once per process).
pub fn current_for(which: Which, location: &str) -> Result<Passphrase, String> {
    if which == Which::Main {
        return current(location);
    }
    let mut read = lock(&READ_FROM)?;
    if let Some(p) = &*read {
        return Ok(p.clone());
    }
    let p = match from_env_for(Which::From)? {
        Some(p) => p,
        // Nothing for the source alone: the destination's variables, else
        // the terminal, asked for this store by name.
        None => match from_env()? {
            Some(p) => p,
            None => from_terminal(&format!("passphrase for {location}: "))?,
        },
    };
    *read = Some(p.clone());
    Ok(p)
}

/// A new passphrase: from `file` if given, else (for `init --encrypt`) the
/// environment's, else asked twice on the terminal. Never empty.
pub fn new(file: Option<&Path>, env_too: bool) -> Result<Passphrase, String> {
    let p = match file {
        Some(f) => from_file(f)?,
        None => match env_too.then(from_env).transpose()?.flatten() {
            Some(p) => p,
            None => {
                let a = from_terminal("new passphrase: ")?;
                let b = from_terminal("the same again: ")?;
                if a != b {
                    return Err("the two passphrases differ".into());
                }
                a
            }
        },
    };
    if p.is_empty() {
        return Err("an empty passphrase is refused".into());
    }
    if env_too {
        // `init --encrypt` then opens nothing else; a later open in this
        // process uses the same passphrase.
        if let Ok(mut read) = READ.lock() {
            *read = Some(p.clone());
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_line_without_its_ending_is_the_passphrase() {
        assert_eq!(first_line(b"secret\n").as_slice(), b"secret");
        assert_eq!(first_line(b"secret\r\nmore").as_slice(), b"secret");
        assert_eq!(first_line(b"sec ret ").as_slice(), b"sec ret ");
        assert_eq!(first_line(b"").as_slice(), b"");
    }
}
