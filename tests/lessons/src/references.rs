//! The static checks: every repository path and Rust module a lesson names exists, every lesson
//! links its answers, and no Markdown file of the repository links outside the repository.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use regex::Regex;

use crate::lesson::Lesson;

/// The folders a path in a lesson may start with.
const REPO_FOLDERS: [&str; 7] = [
    "crates/", "docker/", "docs/", "k8s/", "scripts/", "tests/", ".ci/",
];

/// The workspace's crates: library name (`cluster_sharding`) to source folder.
pub struct Crates(BTreeMap<String, PathBuf>);

impl Crates {
    /// Reads the `[package] name` of every `crates/*` and `tests/*` crate under `root`.
    pub fn find(root: &Path) -> Result<Crates> {
        let mut crates = BTreeMap::new();
        for folder in ["crates", "tests"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
                continue;
            };
            for entry in entries {
                let dir = entry?.path();
                let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
                    continue;
                };
                let name = manifest
                    .lines()
                    .find_map(|l| l.strip_prefix("name = \""))
                    .and_then(|l| l.strip_suffix('"'))
                    .with_context(|| format!("no package name in {}", dir.display()))?;
                crates.insert(name.replace('-', "_"), dir.join("src"));
            }
        }
        Ok(Crates(crates))
    }

    /// Checks that `path` (`runtime::discovery::kubernetes`, `runtime::cluster::MemberInfo`)
    /// names a module of a workspace crate, or an item defined in one. `None` when the first
    /// part is not a workspace crate (then it is not the checker's business).
    pub fn check_module(&self, path: &str) -> Option<Result<(), String>> {
        let mut parts = path.trim_end_matches("()").split("::");
        let src = self.0.get(parts.next()?)?;
        let mut dir = src.clone();
        let mut file = src.join("lib.rs");
        if !file.exists() {
            file = src.join("main.rs");
        }
        let parts: Vec<&str> = parts.collect();
        for (i, part) in parts.iter().enumerate() {
            let (flat, nested) = (
                dir.join(format!("{part}.rs")),
                dir.join(part).join("mod.rs"),
            );
            if flat.exists() || nested.exists() {
                file = if flat.exists() { flat } else { nested };
                dir = dir.join(part);
                continue;
            }
            // Not a module file: the rest must be an item of this module (and at most one
            // associated item of it, `Type::method`), or an inline `mod part`.
            let rest = &parts[i..];
            let source = std::fs::read_to_string(&file).unwrap_or_default();
            let found = rest.len() <= 2 && rest.iter().all(|item| defines(&source, item));
            return Some(if found {
                Ok(())
            } else {
                Err(format!(
                    "`{path}`: {} has no `{}`",
                    file.display(),
                    rest.join("::")
                ))
            });
        }
        Some(Ok(()))
    }
}

/// Whether `source` defines or re-exports `item`.
fn defines(source: &str, item: &str) -> bool {
    let item = regex::escape(item);
    let re = Regex::new(&format!(
        r"(?m)(\b(fn|struct|enum|trait|type|const|static|mod|union)\s+{item}\b|macro_rules!\s*{item}\b|^\s*{item}\s*[,({{=]|\buse\s[^;]*\b{item}\b|^\s*(pub\s+)?async\s+fn\s+{item}\b)"
    ))
    .expect("item pattern");
    re.is_match(source)
}

/// One problem a static check found.
#[derive(Debug)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Checks the paths and modules a lesson (or answer, or the architecture document) names.
pub fn check_names(root: &Path, crates: &Crates, lesson: &Lesson) -> Vec<Finding> {
    let module = Regex::new(r"^[a-z][a-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)+(\(\))?$").unwrap();
    let mut findings = Vec::new();
    for (line, span) in &lesson.code_spans {
        let span = span.trim();
        let finding = |message: String| Finding {
            file: lesson.path.clone(),
            line: *line,
            message,
        };
        if let Some(path) = repo_path(span) {
            if !root.join(path).exists() {
                findings.push(finding(format!("`{span}` does not exist")));
            }
        } else if module.is_match(span)
            && let Some(Err(message)) = crates.check_module(span)
        {
            findings.push(finding(message));
        }
    }
    findings
}

/// The repository path a code span names, if it is one: it starts with a project folder and
/// holds no placeholder (`<`, `{`, `*`, `$`) or command-line part (a space).
fn repo_path(span: &str) -> Option<&str> {
    let looks_like_path = REPO_FOLDERS.iter().any(|f| span.starts_with(f))
        || ["Cargo.toml", "README.md"].contains(&span);
    let placeholder = span.contains(['<', '{', '*', '$', ' ', '|', '=']);
    (looks_like_path && !placeholder).then_some(span)
}

/// Checks that a lesson links its answers file and that the file exists.
pub fn check_answers(lesson: &Lesson) -> Vec<Finding> {
    let Some(name) = lesson.path.file_name().and_then(|n| n.to_str()) else {
        return vec![];
    };
    let answers = format!("answers/{name}");
    let mut findings = Vec::new();
    if !lesson
        .links
        .iter()
        .any(|(_, l)| l.split('#').next() == Some(answers.as_str()))
    {
        findings.push(Finding {
            file: lesson.path.clone(),
            line: 1,
            message: format!("the lesson does not link its answers, `{answers}`"),
        });
    }
    for section in ["Goal", "Concepts", "What to read in the code", "Exercises"] {
        if !lesson
            .headings
            .iter()
            .any(|h| h.trim().starts_with(section))
        {
            findings.push(Finding {
                file: lesson.path.clone(),
                line: 1,
                message: format!("the lesson has no heading starting with \"{section}\""),
            });
        }
    }
    findings
}

/// Checks that every link of a Markdown file stays inside the repository: a relative link
/// resolves to an existing file or folder under `root`; a web link goes only to this machine.
pub fn check_links(root: &Path, file: &Path, links: &[(usize, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (line, link) in links {
        let finding = |message: String| Finding {
            file: file.to_path_buf(),
            line: *line,
            message,
        };
        if let Some((scheme, rest)) = link.split_once("://") {
            let host = rest.split(['/', ':', '?', '#']).next().unwrap_or("");
            let local = ["localhost", "127.0.0.1"].contains(&host);
            if !(matches!(scheme, "http" | "https" | "ws") && local) {
                findings.push(finding(format!(
                    "`{link}` links outside the repository (only files in it and \
                     localhost/127.0.0.1 may be linked)"
                )));
            }
            continue;
        }
        if link.starts_with("mailto:") {
            findings.push(finding(format!("`{link}` links outside the repository")));
            continue;
        }
        let target = link.split('#').next().unwrap_or("");
        if target.is_empty() {
            continue; // a heading of the same file
        }
        let base = file.parent().unwrap_or(Path::new(""));
        match normalize(&base.join(target)) {
            Some(path) if root.join(&path).exists() => {}
            Some(path) => findings.push(finding(format!(
                "`{link}` points to {}, which does not exist",
                path.display()
            ))),
            None => findings.push(finding(format!("`{link}` points outside the repository"))),
        }
    }
    findings
}

/// `a/b/../c` to `a/c`, relative to the repository root; `None` if it climbs out of it.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn modules_and_items_of_workspace_crates_are_resolved() {
        let crates = Crates::find(&root()).unwrap();
        assert_eq!(
            crates.check_module("runtime::discovery::kubernetes"),
            Some(Ok(()))
        );
        assert_eq!(
            crates.check_module("lesson_check::pattern::Expected"),
            Some(Ok(()))
        );
        assert_eq!(
            crates.check_module("lesson_check::pattern::Expected::check"),
            Some(Ok(()))
        );
        assert_eq!(
            crates.check_module("lesson_check::pattern::strip_ansi()"),
            Some(Ok(()))
        );
        assert!(matches!(
            crates.check_module("runtime::no_such_module"),
            Some(Err(_))
        ));
        assert!(matches!(
            crates.check_module("lesson_check::pattern::Nothing"),
            Some(Err(_))
        ));
        assert_eq!(crates.check_module("std::collections::BTreeMap"), None);
    }

    #[test]
    fn paths_are_told_from_commands_and_placeholders() {
        assert_eq!(
            repo_path("crates/runtime/src/sbr.rs"),
            Some("crates/runtime/src/sbr.rs")
        );
        assert_eq!(repo_path("scripts/test.sh --fast"), None);
        assert_eq!(repo_path("target/lessons/<lesson>/"), None);
        assert_eq!(repo_path("crates/*/Cargo.toml"), None);
        assert_eq!(repo_path("tradectl cluster show"), None);
    }

    #[test]
    fn links_stay_inside_the_repository() {
        let file = Path::new("docs/lessons/01-x.md");
        let links = |l: &[&str]| {
            let links: Vec<_> = l.iter().map(|s| (1, s.to_string())).collect();
            check_links(&root(), file, &links)
                .into_iter()
                .map(|f| f.message)
                .collect::<Vec<_>>()
        };
        assert!(links(&["README.md#how-ci", "#goal", "../../crates/runtime"]).is_empty());
        assert!(
            links(&[
                "../../README.md",
                "http://127.0.0.1:8080/",
                "http://localhost:16686"
            ])
            .is_empty()
        );
        assert_eq!(links(&["../../../shared/DESIGN.md"]).len(), 1);
        assert_eq!(
            links(&["https://github.com/petabridge/akkadotnet-code-samples"]).len(),
            1
        );
        assert_eq!(links(&["../no-such-file.md"]).len(), 1);
    }
}
