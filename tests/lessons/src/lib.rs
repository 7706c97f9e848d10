//! The lesson checker: runs the workshop lessons of `docs/lessons/` the way a reader would and
//! fails when a command fails, when its output no longer looks like what the lesson shows, or
//! when a path, module or link a lesson names is wrong. The format it reads is documented for
//! lesson writers in `docs/lessons/README.md`.
//!
//! Why a checker of our own: the tools that run documentation (`trycmd`, `mdbook test`,
//! `byexample`) either run one command at a time with fixed output, or only Rust code. A
//! lesson needs one shell whose state carries over, long-running terminals stopped with
//! Ctrl-C, waits for a cluster to converge, output that varies in its numbers, cleanup that
//! runs after a failure, and a private network namespace for fixed ports. Parsing Markdown is
//! left to `pulldown-cmark` and patterns to `regex`.
//!
//! - [`config_table`]: the configuration tables of `docs/architecture.md` against each binary's flags;
//! - [`lesson`]: a lesson's steps, from its fenced blocks and directives;
//! - [`pattern`]: an output block as a pattern over the real output;
//! - [`references`]: paths, modules, answers and links (the static checks);
//! - [`run`]: the shell, the terminals, the network namespace.

pub mod config_table;
pub mod lesson;
pub mod pattern;
pub mod references;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::lesson::Lesson;
use crate::references::{Crates, Finding};

/// The lessons under `root`: `docs/lessons/NN-*.md`, in order.
pub fn lesson_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("docs/lessons");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".md") && name.len() > 3 && name[..2].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Every static check: the lessons parse; the paths and modules named by the lessons, their
/// answers and `docs/architecture.md` exist; each lesson links its answers; and no Markdown
/// file of the repository (tracked or new, not ignored) links outside the repository.
pub fn static_checks(root: &Path) -> Result<Vec<Finding>> {
    let crates = Crates::find(root)?;
    let mut findings = Vec::new();
    let parse = |file: &Path, findings: &mut Vec<Finding>, strict: bool| -> Option<Lesson> {
        let relative = file.strip_prefix(root).unwrap_or(file);
        let parse = if strict {
            Lesson::parse
        } else {
            Lesson::parse_document
        };
        match std::fs::read_to_string(file)
            .map_err(anyhow::Error::from)
            .and_then(|text| parse(relative, &text))
        {
            Ok(lesson) => Some(lesson),
            Err(e) => {
                findings.push(Finding {
                    file: relative.to_path_buf(),
                    line: 0,
                    message: format!("{e:#}"),
                });
                None
            }
        }
    };
    for file in lesson_files(root)? {
        if let Some(lesson) = parse(&file, &mut findings, true) {
            findings.extend(references::check_answers(&lesson));
            findings.extend(references::check_names(root, &crates, &lesson));
        }
    }
    let mut named = vec![root.join("docs/architecture.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs/lessons/answers")) {
        named.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    for file in named
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        if let Some(lesson) = parse(file, &mut findings, false) {
            findings.extend(references::check_names(root, &crates, &lesson));
        }
    }
    for file in markdown_files(root)? {
        if let Some(lesson) = parse(&root.join(&file), &mut findings, false) {
            findings.extend(references::check_links(root, &file, &lesson.links));
        }
    }
    Ok(findings)
}

/// The repository's Markdown files, relative to `root`: tracked, or new and not ignored.
fn markdown_files(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.md",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files (the link check lists the repository's Markdown files)")?;
    anyhow::ensure!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
