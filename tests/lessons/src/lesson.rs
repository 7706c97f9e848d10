//! A lesson as the checker sees it: the ordered steps its fenced blocks and directives describe
//! (the format is documented in `docs/lessons/README.md`), and the code spans and links the
//! static checks read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use crate::pattern::Numbers;

/// How long a `sh run` block may take unless it says `timeout=`.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long an output block of a terminal waits for a match unless it says `wait=`.
pub const DEFAULT_TERMINAL_WAIT: Duration = Duration::from_secs(90);
/// How long `ctrl-c NAME` waits for the terminal to exit.
pub const CTRL_C_WAIT: Duration = Duration::from_secs(60);

/// One thing the checker does, in the lesson's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A ` ```sh run ` block: run in the lesson's shell.
    Run {
        line: usize,
        script: String,
        timeout: Duration,
        retry: Option<Duration>,
        exit: i32,
    },
    /// A ` ```sh terminal=NAME ` block: a new terminal running the block in the background.
    Terminal {
        line: usize,
        name: String,
        script: String,
    },
    /// A ` ```text output ` block: what the previous run block, or the terminal, printed.
    Output {
        line: usize,
        expected: String,
        /// `numbers=exact`: the block's digits are literal.
        numbers: Numbers,
        source: OutputSource,
        wait: Duration,
    },
    /// `<!-- lesson: ctrl-c NAME -->`.
    CtrlC { line: usize, name: String },
}

/// Whose output an output block is checked against.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSource {
    /// The `sh run` block just before it.
    PreviousRun,
    /// Everything terminal NAME has printed so far.
    Terminal(String),
}

/// A parsed lesson.
#[derive(Debug, Clone, Default)]
pub struct Lesson {
    pub path: PathBuf,
    pub steps: Vec<Step>,
    /// ` ```sh cleanup ` blocks, run at the end in a fresh shell, even after a failure.
    pub cleanup: Vec<(usize, String)>,
    /// `<!-- lesson: own-network -->`.
    pub own_network: bool,
    /// Inline code spans with their line.
    pub code_spans: Vec<(usize, String)>,
    /// Link destinations with their line.
    pub links: Vec<(usize, String)>,
    /// Headings, as text.
    pub headings: Vec<String>,
}

impl Lesson {
    pub fn read(path: &Path) -> Result<Lesson> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Lesson::parse(path, &text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses a lesson: every shell block must say what the checker does with it.
    pub fn parse(path: &Path, text: &str) -> Result<Lesson> {
        Lesson::parse_with(path, text, true)
    }

    /// Parses any Markdown file for its code spans, links and headings only: its blocks are
    /// not steps (an answer or the README may show commands without marking them).
    pub fn parse_document(path: &Path, text: &str) -> Result<Lesson> {
        Lesson::parse_with(path, text, false)
    }

    fn parse_with(path: &Path, text: &str, steps: bool) -> Result<Lesson> {
        let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
        let mut lesson = Lesson {
            path: path.to_path_buf(),
            ..Lesson::default()
        };
        // What an output block without `=NAME` refers to: the last run or terminal block.
        let mut last_source: Option<OutputSource> = None;
        let mut block: Option<(usize, String, String)> = None;
        let mut heading: Option<String> = None;

        let parser = Parser::new_ext(text, Options::empty()).into_offset_iter();
        for (event, range) in parser {
            let line = line_of(range.start);
            match event {
                Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                    block = Some((line, info.to_string(), String::new()));
                }
                Event::Text(t) if block.is_some() => {
                    if let Some((_, _, body)) = block.as_mut() {
                        body.push_str(&t);
                    }
                }
                Event::End(TagEnd::CodeBlock) => {
                    if let Some((line, info, body)) = block.take()
                        && steps
                    {
                        lesson.add_block(line, &info, body, &mut last_source)?;
                    }
                }
                Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
                Event::End(TagEnd::Heading(_)) => {
                    if let Some(h) = heading.take() {
                        lesson.headings.push(h);
                    }
                }
                Event::Text(t) => {
                    if let Some(h) = heading.as_mut() {
                        h.push_str(&t);
                    }
                }
                Event::Code(c) => {
                    if let Some(h) = heading.as_mut() {
                        h.push_str(&c);
                    }
                    lesson.code_spans.push((line, c.to_string()));
                }
                Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                    lesson.links.push((line, dest_url.to_string()));
                }
                Event::Html(html) | Event::InlineHtml(html) if steps => {
                    lesson.add_directives(line, &html)?;
                }
                _ => {}
            }
        }
        Ok(lesson)
    }

    fn add_block(
        &mut self,
        line: usize,
        info: &str,
        body: String,
        last_source: &mut Option<OutputSource>,
    ) -> Result<()> {
        let mut words = info.split_whitespace();
        let language = words.next().unwrap_or("");
        let words: Vec<&str> = words.collect();
        let option = |key: &str| -> Option<&str> {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        let seconds = |key: &str| -> Result<Option<Duration>> {
            option(key)
                .map(|v| {
                    v.trim_end_matches('s')
                        .parse::<u64>()
                        .map(Duration::from_secs)
                        .map_err(|_| anyhow::anyhow!("line {line}: `{key}={v}` is not seconds"))
                })
                .transpose()
        };
        match language {
            "sh" | "bash" | "console" | "shell" => {
                let kinds = ["run", "cleanup", "norun"]
                    .into_iter()
                    .filter(|k| words.contains(k))
                    .map(str::to_string)
                    .chain(option("terminal").map(|n| format!("terminal={n}")))
                    .collect::<Vec<_>>();
                match kinds.as_slice() {
                    [k] if k == "run" => {
                        self.steps.push(Step::Run {
                            line,
                            script: body,
                            timeout: seconds("timeout")?.unwrap_or(DEFAULT_RUN_TIMEOUT),
                            retry: seconds("retry")?,
                            exit: option("exit")
                                .map(|e| e.parse::<i32>())
                                .transpose()
                                .with_context(|| format!("line {line}: `exit=` is not a number"))?
                                .unwrap_or(0),
                        });
                        *last_source = Some(OutputSource::PreviousRun);
                    }
                    [k] if k.starts_with("terminal=") => {
                        let name = option("terminal").unwrap_or_default().to_string();
                        if self
                            .steps
                            .iter()
                            .any(|s| matches!(s, Step::Terminal { name: n, .. } if *n == name))
                        {
                            bail!("line {line}: terminal `{name}` is opened twice");
                        }
                        self.steps.push(Step::Terminal {
                            line,
                            name: name.clone(),
                            script: body,
                        });
                        *last_source = Some(OutputSource::Terminal(name));
                    }
                    [k] if k == "cleanup" => self.cleanup.push((line, body)),
                    [k] if k == "norun" => *last_source = None,
                    [] => bail!(
                        "line {line}: a `{language}` block must say `run`, `terminal=NAME`, \
                         `cleanup` or `norun` (docs/lessons/README.md)"
                    ),
                    more => bail!(
                        "line {line}: a block is one of {}, not all",
                        more.join(", ")
                    ),
                }
            }
            "text"
                if words
                    .iter()
                    .any(|w| *w == "output" || w.starts_with("output=")) =>
            {
                let source = match option("output") {
                    Some(name) => {
                        self.terminal_exists(line, name)?;
                        OutputSource::Terminal(name.to_string())
                    }
                    None => last_source.clone().with_context(|| {
                        format!(
                            "line {line}: an output block must follow a `sh run` or \
                             `sh terminal=NAME` block"
                        )
                    })?,
                };
                let wait = match &source {
                    OutputSource::Terminal(_) => seconds("wait")?.unwrap_or(DEFAULT_TERMINAL_WAIT),
                    OutputSource::PreviousRun => Duration::ZERO,
                };
                if body.trim().is_empty() {
                    bail!("line {line}: an empty output block checks nothing");
                }
                let numbers = match option("numbers") {
                    None => Numbers::Any,
                    Some("exact") => Numbers::Exact,
                    Some(other) => {
                        bail!("line {line}: `numbers={other}`: the one value is `exact`")
                    }
                };
                self.steps.push(Step::Output {
                    line,
                    expected: body,
                    numbers,
                    source,
                    wait,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn add_directives(&mut self, line: usize, html: &str) -> Result<()> {
        for rest in html.split("<!--").skip(1) {
            let comment = rest.split("-->").next().unwrap_or("").trim();
            let Some(directive) = comment.strip_prefix("lesson:") else {
                continue;
            };
            let words: Vec<&str> = directive.split_whitespace().collect();
            match words.as_slice() {
                ["own-network"] => self.own_network = true,
                ["ctrl-c", name] => {
                    self.terminal_exists(line, name)?;
                    self.steps.push(Step::CtrlC {
                        line,
                        name: name.to_string(),
                    });
                }
                _ => bail!("line {line}: unknown directive `<!-- {comment} -->`"),
            }
        }
        Ok(())
    }

    fn terminal_exists(&self, line: usize, name: &str) -> Result<()> {
        if self
            .steps
            .iter()
            .any(|s| matches!(s, Step::Terminal { name: n, .. } if n == name))
        {
            Ok(())
        } else {
            bail!("line {line}: no terminal `{name}` was opened before this")
        }
    }

    /// The lesson's number, from its file name (`01-run-it-locally.md` is 1).
    pub fn number(&self) -> Option<u32> {
        self.path
            .file_name()?
            .to_str()?
            .split('-')
            .next()?
            .parse()
            .ok()
    }

    /// The file name without `.md`, used for the log folder.
    pub fn slug(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Lesson> {
        Lesson::parse(Path::new("docs/lessons/01-x.md"), text)
    }

    #[test]
    fn blocks_become_steps_in_order() {
        let lesson = parse(
            "<!-- lesson: own-network -->\n# Goal\n\nRead `crates/runtime`.\n\n\
             ```sh run retry=30 timeout=5\necho hi\n```\n\n```text output\nhi\n```\n\n\
             ```sh terminal=web\nserve\n```\n\n```text output wait=10\nlistening\n```\n\n\
             <!-- lesson: ctrl-c web -->\n\n```sh norun\nkubectl get svc\n```\n\n\
             ```sh cleanup\nrm -f x\n```\n\n[answers](answers/01-x.md)\n",
        )
        .unwrap();
        assert!(lesson.own_network);
        assert_eq!(lesson.number(), Some(1));
        assert_eq!(lesson.headings, vec!["Goal".to_string()]);
        assert_eq!(lesson.code_spans, vec![(4, "crates/runtime".to_string())]);
        assert_eq!(lesson.links, vec![(32, "answers/01-x.md".to_string())]);
        assert_eq!(lesson.cleanup, vec![(28, "rm -f x\n".to_string())]);
        assert_eq!(
            lesson.steps,
            vec![
                Step::Run {
                    line: 6,
                    script: "echo hi\n".into(),
                    timeout: Duration::from_secs(5),
                    retry: Some(Duration::from_secs(30)),
                    exit: 0
                },
                Step::Output {
                    line: 10,
                    expected: "hi\n".into(),
                    numbers: Numbers::Any,
                    source: OutputSource::PreviousRun,
                    wait: Duration::ZERO
                },
                Step::Terminal {
                    line: 14,
                    name: "web".into(),
                    script: "serve\n".into()
                },
                Step::Output {
                    line: 18,
                    expected: "listening\n".into(),
                    numbers: Numbers::Any,
                    source: OutputSource::Terminal("web".into()),
                    wait: Duration::from_secs(10)
                },
                Step::CtrlC {
                    line: 22,
                    name: "web".into()
                },
            ]
        );
    }

    #[test]
    fn a_shell_block_without_a_kind_is_refused() {
        let err = parse("```sh\nrm -rf /\n```\n").unwrap_err();
        assert!(format!("{err:#}").contains("must say `run`"), "{err:#}");
    }

    #[test]
    fn an_output_block_needs_something_to_check() {
        let err = parse("```sh norun\nx\n```\n\n```text output\nx\n```\n").unwrap_err();
        assert!(format!("{err:#}").contains("must follow"), "{err:#}");
        let err = parse("```text output=nobody\nx\n```\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("no terminal `nobody`"),
            "{err:#}"
        );
        let err = parse("<!-- lesson: ctrl-c nobody -->\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("no terminal `nobody`"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_directives_and_bad_numbers_are_refused() {
        let err = parse("<!-- lesson: skip-this -->\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown directive"), "{err:#}");
        let err = parse("```sh run retry=soon\nx\n```\n").unwrap_err();
        assert!(format!("{err:#}").contains("not seconds"), "{err:#}");
        let err = parse("```sh run norun\nx\n```\n").unwrap_err();
        assert!(format!("{err:#}").contains("not all"), "{err:#}");
    }

    #[test]
    fn plain_comments_are_not_directives() {
        let lesson = parse("<!-- a note for writers -->\n").unwrap();
        assert!(lesson.steps.is_empty());
    }
}
