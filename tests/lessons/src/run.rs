//! Running a lesson as a reader would: one `bash` as the lesson's terminal, more terminals for
//! `terminal=NAME` blocks, Ctrl-C as SIGINT to a terminal's process group, the cleanup blocks
//! at the end whatever happened, and, for `own-network` lessons, all of it inside one private
//! network namespace.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lesson::{CTRL_C_WAIT, Lesson, OutputSource, Step};
use crate::pattern::Expected;

/// How often a waiting step looks again.
const POLL: Duration = Duration::from_millis(200);
/// Pause between two attempts of a `retry=` block.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How long the cleanup blocks may take each.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long terminals and the shell get after SIGINT at the end before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The outcome of one lesson.
pub struct Outcome {
    pub steps: usize,
    pub elapsed: Duration,
    /// The first failure, with the lesson line it happened at.
    pub failure: Option<String>,
    /// Cleanup blocks that failed.
    pub cleanup_failures: Vec<String>,
}

/// Runs `lesson` from `root`, keeping logs in `logs`.
pub fn run_lesson(root: &Path, lesson: &Lesson, logs: &Path) -> Result<Outcome> {
    if logs.exists() {
        std::fs::remove_dir_all(logs).with_context(|| format!("clearing {}", logs.display()))?;
    }
    std::fs::create_dir_all(logs)?;
    let started = Instant::now();
    let network = if lesson.own_network {
        Some(Network::new()?)
    } else {
        None
    };
    // A reader's terminal has none of the project's own variables set; a checker started by
    // scripts/test.sh would otherwise hand down its test server's MONGO_CONNECTION_STR, say.
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("reading docs/architecture.md for the project's variables")?;
    let mut session = Session {
        root: root.to_path_buf(),
        unset: crate::config_table::all_variables(&doc)
            .into_iter()
            .collect(),
        logs: logs.to_path_buf(),
        enter: network.as_ref().map(Network::enter).unwrap_or_default(),
        shell: None,
        terminals: BTreeMap::new(),
        last_output: None,
        count: 0,
    };
    let mut steps_done = 0;
    let failure = match session.run_steps(&lesson.steps, &mut steps_done) {
        Ok(()) => None,
        Err(e) => Some(format!("{e:#}")),
    };
    let cleanup_failures = session.finish(&lesson.cleanup);
    drop(network);
    Ok(Outcome {
        steps: steps_done,
        elapsed: started.elapsed(),
        failure,
        cleanup_failures,
    })
}

/// A private network namespace with its loopback up, held open by a sleeping process.
struct Network {
    holder: Child,
}

impl Network {
    fn new() -> Result<Network> {
        let mut holder = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep 1000000",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting `unshare --net` (an own-network lesson needs root and iproute2)")?;
        let mut line = String::new();
        let stdout = holder.stdout.take().context("holder stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if line.trim() != "up" {
            let status = holder.wait()?;
            bail!("could not make a private network namespace (unshare --net: {status})");
        }
        Ok(Network { holder })
    }

    /// The command prefix that runs a program inside the namespace.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-n", "--"]
            .map(str::to_string)
            .to_vec()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A terminal or the lesson's shell: a process group the checker started.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL);
        }
    }

    /// SIGINT, then SIGKILL after `grace`, to the whole group.
    fn stop(&mut self, grace: Duration) {
        self.signal("-INT");
        if !self.exited_within(grace) {
            self.signal("-KILL");
        }
        // Processes of the group that ignored SIGINT while the leader exited.
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

struct Session {
    root: PathBuf,
    /// Variables removed from the environment the lesson's shells inherit: the project's own.
    unset: Vec<String>,
    logs: PathBuf,
    /// `nsenter ... --` for own-network lessons, else empty.
    enter: Vec<String>,
    shell: Option<(Process, ChildStdin)>,
    terminals: BTreeMap<String, Process>,
    /// The output of the last `sh run` block.
    last_output: Option<String>,
    count: usize,
}

impl Session {
    /// `program` as the lesson runs it: inside its network namespace, if it has one, and with
    /// SIGINT and SIGQUIT at their defaults (a checker started in the background inherits them
    /// ignored, and then Ctrl-C would not stop a terminal), in a process group of its own.
    fn command(&self, program: &str) -> Command {
        let mut command = match self.enter.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg("env");
                c
            }
            None => Command::new("env"),
        };
        command
            .args(["--default-signal=INT,QUIT", program])
            .current_dir(&self.root)
            .process_group(0);
        for var in &self.unset {
            command.env_remove(var);
        }
        command
    }

    fn next_file(&mut self, what: &str, line: usize) -> PathBuf {
        self.count += 1;
        self.logs
            .join(format!("{:02}-line{line}-{what}", self.count))
    }

    fn run_steps(&mut self, steps: &[Step], done: &mut usize) -> Result<()> {
        let mut i = 0;
        while i < steps.len() {
            let step = &steps[i];
            match step {
                Step::Run {
                    line,
                    script,
                    timeout,
                    retry,
                    exit,
                } => {
                    // A retried block is retried until its output block matches too.
                    let expected = match (retry, steps.get(i + 1)) {
                        (
                            Some(_),
                            Some(Step::Output {
                                source: OutputSource::PreviousRun,
                                expected,
                                numbers,
                                ..
                            }),
                        ) => Some(Expected::with_numbers(expected, *numbers)),
                        _ => None,
                    };
                    self.run_block(*line, script, *timeout, *retry, *exit, expected.as_ref())
                        .with_context(|| format!("line {line}: `sh run` block"))?;
                    if expected.is_some() {
                        i += 1;
                        *done += 1;
                    }
                }
                Step::Terminal { line, name, script } => {
                    self.open_terminal(*line, name, script)
                        .with_context(|| format!("line {line}: terminal `{name}`"))?;
                }
                Step::Output {
                    line,
                    expected,
                    numbers,
                    source,
                    wait,
                } => {
                    self.check_output(&Expected::with_numbers(expected, *numbers), source, *wait)
                        .with_context(|| format!("line {line}: output block"))?;
                }
                Step::CtrlC { line, name } => {
                    let terminal = self.terminals.get_mut(name).context("no such terminal")?;
                    terminal.signal("-INT");
                    if !terminal.exited_within(CTRL_C_WAIT) {
                        bail!(
                            "line {line}: terminal `{name}` did not exit within {}s of Ctrl-C \
                             (log {})",
                            CTRL_C_WAIT.as_secs(),
                            terminal.log.display()
                        );
                    }
                }
            }
            *done += 1;
            i += 1;
        }
        Ok(())
    }

    fn shell(&mut self) -> Result<&mut (Process, ChildStdin)> {
        if self.shell.is_none() {
            let log = self.logs.join("shell.log");
            let out = File::create(&log)?;
            let mut child = self
                .command("bash")
                .args(["--norc", "--noprofile"])
                .stdin(Stdio::piped())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("starting bash")?;
            let stdin = child.stdin.take().context("bash stdin")?;
            self.shell = Some((Process { child, log }, stdin));
        }
        Ok(self.shell.as_mut().expect("just set"))
    }

    /// Runs a block in the lesson's shell: sourced, so that `cd`, variables and functions
    /// carry over, with an ERR trap that ends the block at its first failing command.
    fn run_block(
        &mut self,
        line: usize,
        script: &str,
        timeout: Duration,
        retry: Option<Duration>,
        exit: i32,
        expected: Option<&Expected>,
    ) -> Result<()> {
        let deadline = retry.map(|r| Instant::now() + r);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.next_file("run", line);
            let (file, out, status) = (
                base.with_extension("sh"),
                base.with_extension("log"),
                base.with_extension("status"),
            );
            std::fs::write(
                &file,
                format!(
                    "trap '__lesson_status=$?; echo \"lesson-check: exit status $__lesson_status \
                     at line $LINENO of this block\" >&2; trap - ERR; return $__lesson_status' ERR\n\
                     {script}\n__lesson_status=$?; trap - ERR; return $__lesson_status\n"
                ),
            )?;
            let command = format!(
                "source {} > {} 2>&1 < /dev/null; echo $? > {}.tmp; mv {}.tmp {}\n",
                quote(&file),
                quote(&out),
                quote(&status),
                quote(&status),
                quote(&status),
            );
            let (shell, stdin) = self.shell()?;
            stdin
                .write_all(command.as_bytes())
                .context("the lesson's shell has exited")?;
            stdin.flush()?;
            let started = Instant::now();
            let code = loop {
                if let Ok(text) = std::fs::read_to_string(&status) {
                    break text.trim().parse::<i32>().unwrap_or(-1);
                }
                if let Ok(Some(s)) = shell.child.try_wait() {
                    bail!(
                        "the lesson's shell exited ({s}) during the block (a bare `exit`?); \
                         output:\n{}",
                        tail(&out)
                    );
                }
                if started.elapsed() > timeout {
                    // The shell is busy with the block: stop it all; the lesson has failed.
                    let (mut shell, _) = self.shell.take().expect("shell");
                    shell.stop(Duration::from_secs(5));
                    bail!(
                        "did not finish within {}s (timeout=); output so far:\n{}",
                        timeout.as_secs(),
                        tail(&out)
                    );
                }
                sleep(POLL);
            };
            let output = std::fs::read_to_string(&out).unwrap_or_default();
            let matched = match expected {
                Some(e) => e.check(&output).map_err(|m| m.expected_line),
                None => Ok(()),
            };
            if code == exit && matched.is_ok() {
                self.last_output = Some(output);
                return Ok(());
            }
            let why = if code != exit {
                format!("exit status {code}, expected {exit}")
            } else {
                format!("output has no line like `{}`", matched.unwrap_err())
            };
            match deadline {
                Some(d) if Instant::now() + RETRY_PAUSE < d => sleep(RETRY_PAUSE),
                _ => bail!(
                    "{why}{}; output:\n{}",
                    if attempt > 1 {
                        format!(" after {attempt} attempts")
                    } else {
                        String::new()
                    },
                    tail(&out)
                ),
            }
        }
    }

    fn open_terminal(&mut self, line: usize, name: &str, script: &str) -> Result<()> {
        let base = self.next_file(&format!("terminal-{name}"), line);
        let (file, log) = (base.with_extension("sh"), base.with_extension("log"));
        std::fs::write(&file, script)?;
        let out = File::create(&log)?;
        let child = self
            .command("bash")
            .args(["--norc", "--noprofile"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting bash")?;
        self.terminals
            .insert(name.to_string(), Process { child, log });
        Ok(())
    }

    fn check_output(
        &mut self,
        pattern: &Expected,
        source: &OutputSource,
        wait: Duration,
    ) -> Result<()> {
        match source {
            OutputSource::PreviousRun => {
                let output = self.last_output.as_deref().unwrap_or("");
                pattern.check(output).map_err(|m| {
                    anyhow::anyhow!(
                        "the output has no line like `{}` (after {} matching lines); it was:\n{}",
                        m.expected_line,
                        m.matched,
                        last_lines(output, 40)
                    )
                })
            }
            OutputSource::Terminal(name) => {
                let terminal = self.terminals.get_mut(name).context("no such terminal")?;
                let deadline = Instant::now() + wait;
                loop {
                    let output = std::fs::read_to_string(&terminal.log).unwrap_or_default();
                    let result = pattern.check(&output);
                    let Err(m) = result else { return Ok(()) };
                    let exited = matches!(terminal.child.try_wait(), Ok(Some(_)));
                    if Instant::now() >= deadline || exited {
                        bail!(
                            "terminal `{name}` printed no line like `{}` (after {} matching \
                             lines) within {}s{}; it printed:\n{}",
                            m.expected_line,
                            m.matched,
                            wait.as_secs(),
                            if exited { " (it has exited)" } else { "" },
                            last_lines(&output, 40)
                        );
                    }
                    sleep(POLL);
                }
            }
        }
    }

    /// The end of a lesson, whatever happened: the cleanup blocks in a fresh shell each, then
    /// Ctrl-C to every terminal and the lesson's shell, and SIGKILL to what is left.
    fn finish(&mut self, cleanup: &[(usize, String)]) -> Vec<String> {
        let mut failures = Vec::new();
        for (line, script) in cleanup {
            let base = self.next_file("cleanup", *line);
            let (file, log) = (base.with_extension("sh"), base.with_extension("log"));
            let result = (|| -> Result<()> {
                std::fs::write(&file, script)?;
                let out = File::create(&log)?;
                let child = self
                    .command("bash")
                    .args(["--norc", "--noprofile", "-e"])
                    .arg(&file)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .spawn()?;
                let mut process = Process {
                    child,
                    log: log.clone(),
                };
                if !process.exited_within(CLEANUP_TIMEOUT) {
                    process.stop(Duration::from_secs(5));
                    bail!("did not finish within {}s", CLEANUP_TIMEOUT.as_secs());
                }
                let status = process.child.wait()?;
                if !status.success() {
                    bail!("{status}");
                }
                Ok(())
            })();
            if let Err(e) = result {
                failures.push(format!(
                    "line {line}: cleanup block: {e:#}; output:\n{}",
                    tail(&log)
                ));
            }
        }
        for terminal in self.terminals.values_mut() {
            terminal.signal("-INT");
        }
        if let Some((shell, stdin)) = self.shell.as_mut() {
            let _ = stdin.write_all(b"exit 0\n");
            shell.signal("-INT");
        }
        for terminal in self.terminals.values_mut() {
            terminal.stop(STOP_GRACE);
        }
        if let Some((mut shell, stdin)) = self.shell.take() {
            drop(stdin);
            shell.stop(STOP_GRACE);
        }
        failures
    }
}

/// Single-quotes a path for bash.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn tail(path: &Path) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default(), 40)
}

fn last_lines(text: &str, n: usize) -> String {
    let text = crate::pattern::strip_ansi(text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Outcome {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let lesson = Lesson::parse(Path::new("docs/lessons/99-test.md"), text).unwrap();
        let logs = tempfile_dir();
        run_lesson(&root, &lesson, &logs).unwrap()
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lesson-check-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn state_carries_over_between_blocks_and_output_is_checked() {
        let outcome = run("```sh run\ncd crates\nX=42\n```\n\n\
             ```sh run\necho \"$X in $(basename \"$PWD\")\"\n```\n\n```text output\n7 in crates\n```\n");
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.steps, 3);
    }

    #[test]
    fn a_failing_command_fails_the_block_at_once() {
        let outcome = run("```sh run\nfalse\necho not reached\n```\n");
        let failure = outcome.failure.unwrap();
        assert!(failure.contains("exit status 1, expected 0"), "{failure}");
        assert!(!failure.contains("| not reached"), "{failure}");
        let outcome = run("```sh run exit=3\n(exit 3)\n```\n\n```sh run\necho after\n```\n");
        assert_eq!(outcome.failure, None);
        // A negated last command does not fire the ERR trap; its status still counts.
        let outcome = run("```sh run\n! echo found | grep -q found\n```\n");
        assert!(outcome.failure.unwrap().contains("exit status 1"));
    }

    #[test]
    fn wrong_output_fails_with_what_was_printed() {
        let outcome =
            run("```sh run\necho members: 3\n```\n\n```text output\nmembers: 3 Up\n```\n");
        let failure = outcome.failure.unwrap();
        assert!(
            failure.contains("no line like `members: 3 Up`"),
            "{failure}"
        );
        assert!(failure.contains("| members: 3"), "{failure}");
    }

    #[test]
    fn retry_runs_the_block_again_until_it_passes() {
        let f = tempfile_dir().join("n");
        let outcome = run(&format!(
            "```sh run retry=30\necho x >> {f}\ntest $(wc -l < {f}) -ge 3\necho done\n```\n\n\
             ```text output\ndone\n```\n",
            f = f.display()
        ));
        assert_eq!(outcome.failure, None);
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 3);
        let outcome = run("```sh run retry=3\necho never\n```\n\n```text output\nalways\n```\n");
        assert!(outcome.failure.unwrap().contains("attempts"));
    }

    #[test]
    fn a_timeout_fails_the_block() {
        let outcome = run("```sh run timeout=1\nsleep 30\n```\n");
        assert!(
            outcome
                .failure
                .unwrap()
                .contains("did not finish within 1s")
        );
    }

    #[test]
    fn terminals_run_in_the_background_and_stop_on_ctrl_c() {
        let outcome = run("```sh terminal=server\n\
             trap 'echo bye; exit 0' INT\necho listening on 8080\nwhile true; do sleep 0.1; done\n```\n\n\
             ```text output\nlistening on 8080\n```\n\n<!-- lesson: ctrl-c server -->\n\n\
             ```text output=server\nbye\n```\n");
        assert_eq!(outcome.failure, None);
        assert_eq!(outcome.steps, 4);
    }

    #[test]
    fn cleanup_runs_after_a_failure() {
        let f = tempfile_dir().join("cleaned");
        let outcome = run(&format!(
            "```sh run\nfalse\n```\n\n```sh cleanup\ntouch {}\n```\n",
            f.display()
        ));
        assert!(outcome.failure.is_some());
        assert!(f.exists());
    }

    #[test]
    fn own_network_lessons_get_their_own_loopback() {
        let outcome = run("<!-- lesson: own-network -->\n\n\
             ```sh run\ntest \"$(ip -o link | wc -l)\" = 1 && echo only loopback\n```\n\n\
             ```text output\nonly loopback\n```\n");
        assert_eq!(outcome.failure, None, "needs root: {:?}", outcome.failure);
    }
}
