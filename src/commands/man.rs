//! `pagesnap man DIR`: roff man pages generated from the clap definitions:
//! `pagesnap.1`, and `pagesnap-SUB.1` for every subcommand (`pagesnap-policy-set.1`
//! for nested ones), as `man` and packagers expect them.

use crate::cli::{Cli, ManArgs};
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use std::path::Path;
use std::process::ExitCode;

pub fn run(a: &ManArgs) -> Result<ExitCode> {
    let dir = &a.dir;
    if !dir.is_dir() {
        bail!("{}: not an existing directory", dir.display());
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (`pagesnap-backup`), which names
    // its page and its title.
    cmd.build();
    let mut pages = Vec::new();
    collect(cmd, &mut pages);
    // Every page is rendered before any is written: a failure to render leaves
    // nothing behind.
    let mut rendered = Vec::with_capacity(pages.len());
    for page in pages {
        let man = clap_mangen::Man::new(page);
        let mut bytes = Vec::new();
        man.render(&mut bytes).context("cannot render a man page")?;
        rendered.push((man.get_filename(), bytes));
    }
    for (name, bytes) in &rendered {
        write(&dir.join(name), bytes)?;
    }
    println!("wrote {} man pages to {}", rendered.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn collect(cmd: clap::Command, out: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub.clone(), out);
    }
    out.push(cmd);
}

/// Writes one page through a temporary file and a rename, so that a reader (or
/// an interrupted run) never sees a truncated page.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = || format!("{}: cannot write the man page", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(fail)?;
    // Readable by all, as pages installed into a man directory are (the temporary
    // file is created owner-only).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(fail)?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(fail)?;
    tmp.persist(path).map_err(|e| e.error).with_context(fail)?;
    Ok(())
}
