//! `lesson-check`: runs the workshop lessons (`scripts/check-lessons.sh` builds and calls it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use lesson_check::lesson::Lesson;
use lesson_check::{lesson_files, run, static_checks};

/// Runs the lessons in docs/lessons as a reader would and checks what they show.
#[derive(Parser)]
#[command(name = "lesson-check")]
struct Cli {
    /// Only the static checks: paths, modules, answers and links.
    #[arg(long = "static")]
    static_only: bool,
    /// The repository's root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Run the lessons that have their own network namespace beside the others, two at a time.
    #[arg(long)]
    parallel: bool,
    /// Lessons to run, by number (all when none is given).
    lessons: Vec<u32>,
}

fn main() -> ExitCode {
    match check(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lesson-check: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check(cli: Cli) -> Result<bool> {
    let root = cli.root.canonicalize().context("the repository root")?;
    let findings = static_checks(&root)?;
    for f in &findings {
        eprintln!("{}:{}: {}", f.file.display(), f.line, f.message);
    }
    println!("static checks: {} problem(s)", findings.len());
    let mut ok = findings.is_empty();
    if cli.static_only {
        return Ok(ok);
    }
    let lessons: Vec<Lesson> = lesson_files(&root)?
        .iter()
        .map(|f| Lesson::read(f))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|l: &Lesson| {
            cli.lessons.is_empty() || l.number().is_some_and(|n| cli.lessons.contains(&n))
        })
        .collect();
    anyhow::ensure!(!lessons.is_empty(), "no lesson matches {:?}", cli.lessons);
    // With --parallel, the lessons in their own network namespace run in order on one thread
    // and the others (on Docker) in order on another: the two sets share no port.
    let (own, shared): (Vec<&Lesson>, Vec<&Lesson>) = if cli.parallel {
        lessons.iter().partition(|l| l.own_network)
    } else {
        (lessons.iter().collect(), Vec::new())
    };
    let results = std::thread::scope(|scope| {
        let groups: Vec<_> = [own, shared]
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|group| {
                scope.spawn(|| {
                    group
                        .into_iter()
                        .map(|l| run_one(&root, l))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        groups
            .into_iter()
            .flat_map(|g| g.join().expect("a lesson thread panicked"))
            .collect::<Vec<_>>()
    });
    for result in results {
        ok &= result?;
    }
    Ok(ok)
}

/// Runs one lesson and prints its report in one piece (lessons may run two at a time).
fn run_one(root: &std::path::Path, lesson: &Lesson) -> Result<bool> {
    let slug = lesson.slug();
    println!("==> lesson {slug}: {} steps", lesson.steps.len());
    let logs = root.join("target/lessons").join(&slug);
    let outcome = run::run_lesson(root, lesson, &logs)?;
    let secs = outcome.elapsed.as_secs_f64();
    let path = lesson
        .path
        .strip_prefix(root)
        .unwrap_or(&lesson.path)
        .display()
        .to_string();
    let mut report = match &outcome.failure {
        None => format!(
            "lesson {slug}: passed, {} steps in {secs:.0} s\n",
            outcome.steps
        ),
        Some(failure) => {
            format!(
                "lesson {slug}: FAILED after {} steps in {secs:.0} s\n  {path}:{failure}\n",
                outcome.steps
            )
        }
    };
    for failure in &outcome.cleanup_failures {
        report.push_str(&format!("lesson {slug}: cleanup FAILED: {failure}\n"));
    }
    report.push_str(&format!("    logs: {}", logs.display()));
    println!("{report}");
    Ok(outcome.failure.is_none() && outcome.cleanup_failures.is_empty())
}
