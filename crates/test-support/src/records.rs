//! Whole `fifo run` processes whose exec handler keeps its own records, and
//! the order checks made from them.
//!
//! Every run of the handler appends a line when it starts and one when it
//! ends (`ok`, `failed`, or `killed` when fifo cancelled it) to one file that
//! all the processes of a test share. The checks read only that file: what
//! the handlers saw is what users see, whatever fifo believes it did.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::binary::fifo_command;

/// The exec handler. It records `start`, runs `$BEHAVIOUR` (shell code that
/// may change `work` and `status`, and may look at `seq` and the `FIFO_*`
/// variables), sleeps `work` seconds (default `$WORK`), records `ok` or
/// `failed` and exits with `status`. SIGTERM, which fifo sends the process
/// group when it cancels a run, records `killed` with the time the run
/// really ended; once: a second SIGTERM (when fifo dies, the parent-death
/// signal and then the guard's) is ignored, by `date` in the record too. A record is `EVENT RUNNER GROUP NANOS RECEIVE_COUNT SEQ`,
/// `SEQ` taken from the body that `fifo send` generated.
///
/// An empty body (SQS refuses those) means fifo died while handing the
/// message over (`kill -9`): the program got no message, so it records
/// nothing.
///
/// Nothing is written to stdout or stderr: fifo closes the program's pipes
/// when it cancels a run, and dash reports the sleep killed by the same
/// SIGTERM ("Terminated") on stderr, which would then end the shell with
/// SIGPIPE before its trap records anything.
const SCRIPT: &str = r#"body=$(cat)
[ -n "$body" ] || exit 0
seq=${body#*\"seq\":}
seq=${seq%%[!0-9]*}
record() {
    echo "$1 $RUNNER $FIFO_GROUP_ID $(date +%s%N) $FIFO_RECEIVE_COUNT $seq" >> "$RECORDS"
}
trap 'trap "" TERM; record killed; exit 143' TERM
record start
work=$WORK
status=0
eval "$BEHAVIOUR"
sleep "$work" &
wait $! 2>/dev/null
trap - TERM
if [ "$status" = 0 ]; then record ok; else record failed; fi
exit "$status""#;

/// What the recording handler does with each message.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    /// Seconds each run takes.
    pub work: &'a str,
    /// Shell code run after the start record (see [`SCRIPT`]), e.g.
    /// `[ "$seq" = 1 ] && work=3`.
    pub behaviour: &'a str,
}

impl Script<'static> {
    /// Every run sleeps `work` seconds and succeeds.
    pub fn sleeping(work: &'static str) -> Script<'static> {
        Script {
            work,
            behaviour: "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Ok,
    Failed,
    Killed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    pub runner: String,
    pub group: String,
    pub nanos: u128,
    pub receive_count: u32,
    pub seq: u64,
}

/// The records so far, in time order. A line still being written (no
/// newline yet) is left for the next read.
pub fn records(dir: &TempDir) -> Vec<Record> {
    let text = std::fs::read_to_string(dir.path().join("records")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut records: Vec<Record> = complete
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 6, "a malformed record: {line:?}");
            let event = match fields[0] {
                "start" => Event::Start,
                "ok" => Event::Ok,
                "failed" => Event::Failed,
                "killed" => Event::Killed,
                other => panic!("unknown event {other:?} in {line:?}"),
            };
            Record {
                event,
                runner: fields[1].to_owned(),
                group: fields[2].to_owned(),
                nanos: fields[3].parse().expect("nanoseconds"),
                receive_count: fields[4].parse().expect("a receive count"),
                seq: fields[5].parse().expect("a seq"),
            }
        })
        .collect();
    records.sort_by_key(|r| r.nanos);
    records
}

/// One run of the handler on one message: from its start record to its end
/// record, if it has one yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub runner: String,
    pub group: String,
    pub seq: u64,
    pub receive_count: u32,
    pub start: u128,
    /// When it ended and how: `Ok`, `Failed` or `Killed`.
    pub end: Option<(u128, Event)>,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        matches!(self.end, Some((_, Event::Ok)))
    }

    pub fn killed(&self) -> bool {
        matches!(self.end, Some((_, Event::Killed)))
    }

    /// When it ended; a run without an end has not ended.
    pub fn end_nanos(&self) -> u128 {
        self.end.map_or(u128::MAX, |(nanos, _)| nanos)
    }
}

/// The runs, ordered by their start. An end record closes the earliest open
/// run of the same process, group and message.
pub fn runs(records: &[Record]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open: HashMap<(&str, &str, u64), VecDeque<usize>> = HashMap::new();
    for r in records {
        let key = (r.runner.as_str(), r.group.as_str(), r.seq);
        if r.event == Event::Start {
            open.entry(key).or_default().push_back(runs.len());
            runs.push(Run {
                runner: r.runner.clone(),
                group: r.group.clone(),
                seq: r.seq,
                receive_count: r.receive_count,
                start: r.nanos,
                end: None,
            });
            continue;
        }
        let index = open
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("an end without a start: {r:?}"));
        runs[index].end = Some((r.nanos, r.event));
    }
    runs
}

/// `group-1..=group-N`, each with `count` messages (what `fifo send
/// --groups N --count N·count` sends).
pub fn numbered_groups(groups: usize, count: u64) -> Vec<(String, u64)> {
    (1..=groups)
        .map(|g| (format!("group-{g}"), count))
        .collect()
}

/// Asserts fifo's promise from the runs of every group in `expected`
/// (group, number of messages `1..=count`), across all processes:
///
/// 1. no two runs of a group overlap in time;
/// 2. no run of message k starts before a successful run of message k−1
///    ended;
/// 3. the last runs of the messages happen in send order (duplicates may
///    come before, overtaking never);
///
/// and every message succeeded at least once, and nothing else ran.
pub fn assert_order(records: &[Record], expected: &[(String, u64)]) {
    let all = runs(records);
    let origin = records.first().map_or(0, |r| r.nanos);
    for run in &all {
        assert!(
            expected
                .iter()
                .any(|(group, count)| *group == run.group && (1..=*count).contains(&run.seq)),
            "a run of a message that was not sent: {run:?}"
        );
    }
    for (group, count) in expected {
        let mine: Vec<&Run> = all.iter().filter(|r| &r.group == group).collect();
        let shown = timeline(&mine, origin);
        for pair in mine.windows(2) {
            assert!(
                pair[0].end_nanos() < pair[1].start,
                "group {group}: seq {} started while seq {} was still running\n{shown}",
                pair[1].seq,
                pair[0].seq
            );
        }
        for run in mine.iter().filter(|r| r.seq > 1) {
            assert!(
                mine.iter()
                    .any(|p| p.seq == run.seq - 1 && p.succeeded() && p.end_nanos() < run.start),
                "group {group}: seq {} started ({} on receive {}) before seq {} had succeeded\n{shown}",
                run.seq,
                run.runner,
                run.receive_count,
                run.seq - 1
            );
        }
        for seq in 1..=*count {
            assert!(
                mine.iter().any(|r| r.seq == seq && r.succeeded()),
                "group {group}: seq {seq} never succeeded\n{shown}"
            );
        }
        let mut last: BTreeMap<u64, u128> = BTreeMap::new();
        for run in &mine {
            last.insert(run.seq, run.start);
        }
        let mut by_last_run: Vec<u64> = last.keys().copied().collect();
        by_last_run.sort_by_key(|seq| last[seq]);
        assert_eq!(
            by_last_run,
            (1..=*count).collect::<Vec<_>>(),
            "group {group}: the last runs are out of send order\n{shown}"
        );
    }
}

/// The runs of one group, one a line, in milliseconds from `origin`.
pub fn timeline(runs: &[&Run], origin: u128) -> String {
    let ms = |nanos: u128| nanos.saturating_sub(origin) as f64 / 1e6;
    let mut text = String::new();
    for run in runs {
        let end = match run.end {
            Some((nanos, event)) => format!("{:.1} ms {event:?}", ms(nanos)),
            None => "(no end)".to_owned(),
        };
        let _ = writeln!(
            text,
            "  {} seq {} receive {}: {:.1} ms .. {end}",
            run.runner,
            run.seq,
            run.receive_count,
            ms(run.start)
        );
    }
    text
}

/// A `fifo` process in the background, killed if dropped while running (a
/// test that failed half-way).
pub struct Process {
    child: Child,
    pub runner: String,
    /// Where its stderr goes, read when it exits: a file, so that fifo
    /// never waits on a pipe nobody reads.
    stderr: Option<PathBuf>,
}

/// How a process ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// Empty when stderr was not kept.
    pub stderr: String,
}

impl Process {
    /// Starts `command` with its stderr going to a file in `dir`; stdout is
    /// as `command` has it.
    pub fn spawn(dir: &TempDir, runner: &str, mut command: Command) -> Process {
        let stderr = dir.path().join(format!("{runner}.stderr"));
        command.stderr(File::create(&stderr).expect("a stderr file"));
        let mut process = Process::spawn_as_is(runner, command);
        process.stderr = Some(stderr);
        process
    }

    /// Starts `command` with the stdout and stderr it has.
    pub fn spawn_as_is(runner: &str, mut command: Command) -> Process {
        // Its own process group, so that a test can signal fifo alone or
        // the group; exec handlers are in groups of their own anyway.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        Process {
            child: command.spawn().expect("fifo starts"),
            runner: runner.to_owned(),
            stderr: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, when `command` had it piped.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Exit {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Exit {
                    status,
                    stderr: self.stderr(),
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "fifo {} did not exit within {limit:?}; stderr:\n{}",
                    self.runner,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a `fifo run --until-empty` and asserts it exited 0.
    pub fn finish(mut self) -> Exit {
        let exit = self.wait(Duration::from_secs(60));
        assert!(
            exit.status.success(),
            "fifo {} failed ({}):\n{}",
            self.runner,
            exit.status,
            exit.stderr
        );
        exit
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `fifo run` on `url` in the background as `runner`, with the
/// recording exec handler doing `script`; `run_args` follow `run`.
pub fn spawn_run(
    dir: &TempDir,
    url: &str,
    runner: &str,
    script: &Script,
    run_args: &[&str],
) -> Process {
    let command = run_command(dir, url, runner, script, run_args);
    Process::spawn(dir, runner, command)
}

/// The command [`spawn_run`] starts.
pub fn run_command(
    dir: &TempDir,
    url: &str,
    runner: &str,
    script: &Script,
    run_args: &[&str],
) -> Command {
    let records = dir.path().join("records");
    let mut args = vec!["--queue-url", url, "run", "--wait-time", "1"];
    args.extend_from_slice(run_args);
    args.extend(["--", "sh", "-c", SCRIPT]);
    let env = [
        ("RECORDS", records.to_str().unwrap()),
        ("WORK", script.work),
        ("BEHAVIOUR", script.behaviour),
        ("RUNNER", runner),
    ];
    let mut command = fifo_command(dir, &args, &env);
    command.stdout(Stdio::null());
    command
}

/// Waits until `ready` holds for the records (the event a test acts on).
pub fn wait_for(dir: &TempDir, what: &str, ready: impl Fn(&[Record]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&records(dir)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`-TERM`, `-KILL`) to `pid`, or to its process group.
pub fn signal(pid: u32, signal: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let status = Command::new("kill")
        .args([signal, "--", &target])
        .status()
        .unwrap();
    assert!(status.success());
}
