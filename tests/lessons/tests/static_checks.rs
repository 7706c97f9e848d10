//! The lessons' static checks on the repository itself, so that a renamed module or a broken
//! link fails `cargo nextest` and not only the lesson run at the end of CI.

use std::path::Path;

#[test]
fn the_lessons_paths_modules_answers_and_links_are_right() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let findings = lesson_check::static_checks(&root).unwrap();
    let report: Vec<String> = findings
        .iter()
        .map(|f| format!("{}:{}: {}", f.file.display(), f.line, f.message))
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}
