//! BENCHMARKS.md and its chart, from the figures of one run only.

use crate::report::{Latency, Report, SendMemory};
use crate::{PER_GROUP, Plan};

pub(crate) fn latency_svg(report: &Report) -> String {
    let rows = &report.latency;
    let (width, height, margin) = (640.0, 360.0, 50.0);
    let max_y = rows
        .iter()
        .map(|r| r.makespan_s.max(r.bound_s))
        .fold(0.0, f64::max)
        * 1.1;
    let max_x = rows
        .iter()
        .map(|r| (r.workers as f64).log2())
        .fold(1.0, f64::max);
    let x = |w: f64| margin + w.log2() / max_x * (width - 2.0 * margin);
    let min_y = rows
        .iter()
        .map(|r| f64::min(r.makespan_s, r.bound_s))
        .fold(f64::INFINITY, f64::min)
        * 0.8;
    // Log scale: the ratio between makespan and bound is what matters.
    let y = |v: f64| {
        height
            - margin
            - (v.ln() - min_y.ln()) / (max_y.ln() - min_y.ln()) * (height - 2.0 * margin)
    };
    let line = |figure: fn(&Latency) -> f64| {
        rows.iter()
            .map(|r| format!("{:.1},{:.1}", x(r.workers as f64), y(figure(r))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">Latency-bound makespan vs lower bound (L = 50 ms, 20 per group)</text>
<line x1="{margin}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">workers W (both axes log scale)</text>
<text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">seconds</text>
<polyline fill="none" stroke="#888" stroke-dasharray="5,4" stroke-width="2" points="{}"/>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{}"/>
<text x="{}" y="{}" fill="#c0392b">fifo makespan</text>
<text x="{}" y="{}" fill="#888">bound max(N·L/W, 20·L)</text>
"##,
        width / 2.0,
        height - margin,
        width - margin,
        height - margin,
        height - margin,
        width / 2.0,
        height - 12.0,
        height / 2.0,
        height / 2.0,
        line(|r| r.bound_s),
        line(|r| r.makespan_s),
        margin + 20.0,
        height - margin - 36.0,
        margin + 20.0,
        height - margin - 20.0,
    );
    for r in rows {
        let w = r.workers as f64;
        svg += &format!(
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{w}</text>"#,
            x(w),
            height - margin + 16.0
        );
        svg += "\n";
    }
    for v in [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0] {
        if v < min_y || v > max_y {
            continue;
        }
        svg += &format!(
            r#"<text x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            margin - 4.0,
            y(v) + 4.0
        );
        svg += &format!(
            r##"<line x1="{margin}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            y(v),
            width - margin,
            y(v)
        );
        svg += "\n";
    }
    svg + "</svg>\n"
}

/// What bounds the figures that miss their goal, from this run's numbers.
fn bounds(report: &Report) -> String {
    let no_op = &report.no_op;
    let engine = &report.engine;
    let limit = &report.limit;
    let mut md = String::from("\n## Where a goal is missed, and what bounds it\n\n");
    let fifo_cpu = no_op.fifo_cpu_us_per_msg;
    let sdk_cpu = limit.sdk_cpu_us_per_msg;
    if fifo_cpu > 25.0 {
        md += &format!(
            "**CPU per message ({fifo_cpu:.1} µs, goal 25 µs).** The bare SDK loop of (1), which makes \
             only the `ReceiveMessage` and `DeleteMessageBatch` calls and nothing else, spends {sdk_cpu:.1} µs \
             per message in this same run ({:.0} % of fifo's): the AWS SDK's cost per call, at the \
             floor of 0.2 calls per message that batches of ten allow. Below that needs fewer or \
             cheaper SDK calls.\n\n",
            100.0 * sdk_cpu / fifo_cpu
        );
        let per_rtt: Vec<String> = report
            .rtt
            .iter()
            .map(|at| {
                format!(
                    "at RTT {} ms fifo {:.1} µs and the bare loop {:.1} µs",
                    at.rtt_ms, at.no_op.cpu_us_per_msg, at.sdk_cpu_us_per_msg
                )
            })
            .collect();
        if !per_rtt.is_empty() {
            md += &format!(
                "Through the proxy of (10), with the bare loop alone on a thread of its own as fifo \
                 runs: {}. Whatever the round trip does to the CPU per message, it does to the bare \
                 SDK loop too (its calls, not fifo's work around them). The difference between the \
                 two is fifo's own work per message (engine, handler, output). Of what fifo's client \
                 configuration controls, the stalled-stream monitor (timers on every call) is already \
                 off.\n\n",
                per_rtt.join("; ")
            );
        }
    }
    let limit_rate = limit.receive_delete_msgs_per_s;
    let run_ratio = no_op.run_ratio;
    if run_ratio < 0.9 {
        let rates: Vec<String> = no_op
            .runs
            .iter()
            .map(|r| format!("{:.0}", r.msgs_per_s))
            .collect();
        let limits: Vec<String> = limit
            .all_receive_delete
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect();
        md += &format!(
            "**`fifo run` no-op ({run_ratio:.2} of the limit).** LocalStack was busy {:.2} of a core \
             during fifo's runs, which gave {} msgs/s against the bare loop's {} msgs/s in the runs \
             beside them.\n\n",
            no_op.localstack_cpu_share,
            rates.join(", "),
            limits.join(", "),
        );
    }
    for r in &report.latency {
        if r.ratio > 1.15 {
            let messages = r.messages as f64;
            let needed = messages / r.bound_s;
            let at_the_limit = messages / limit_rate;
            md += &format!(
                "**Latency-bound at W = {} ({:.2} s against a bound of {:.2} s).** Reaching the bound \
                 takes {needed:.0} msgs/s through the queue; this run's emulator limit, measured in (1), \
                 is {limit_rate:.0} msgs/s, so the {messages:.0} messages alone need at least \
                 {at_the_limit:.2} s of receives and deletes. Then groups come in one receive at a time: \
                 the last group's first message started {:.3} s after the first one, and after \
                 its 10th message a group waited a median {:.3} s for the next ten (its done \
                 messages deleted together, the group unlocked, and a receive among all the others).\n\n",
                r.workers, r.makespan_s, r.bound_s, r.last_group_first_start_s, r.refill_gap_p50_s,
            );
        }
    }
    let skew = &report.skew;
    let skew_worst = skew.cold_p50_ratio.max(skew.cold_p99_ratio);
    if skew_worst > 1.2 {
        md += &format!(
            "**Skew (cold groups {skew_worst:.2} × slower with the hot group).** The hot group is one \
             lane: it holds one of the 16 workers for its whole backlog (hot p50 {:.2} s), so the cold \
             groups share 15, and receives that return the hot group's ten messages are receives the \
             cold groups wait behind.\n\n",
            skew.with_hot.hot_p50_s,
        );
    }
    let rate = engine.no_op_msgs_per_s.max(engine.batch_msgs_per_s);
    if rate < 1e6 {
        md += &format!(
            "**The engine alone ({rate:.0} msgs/s, goal 1,000,000).** {:.2} µs per message, on one \
             thread (wall time, so at least its CPU time), for the engine and the in-memory queue together. Each message is received \
             into an owned message (its id, body, group and sequence number are strings), tracked by \
             id with its lease, pushed into its group's lane, handed to a task of its own (one per \
             handler call) so that handlers run concurrently and a panic stays contained, and deleted by receipt handle \
             with the group's other done messages, in one call. The \
             router's part costs {:.0} ns per message (criterion `router_cycle`: handed out, \
             finished, deleted). With batches of {} (one task per call, `--batch`), {:.0} msgs/s \
             and {:.2} µs per message: what remains is per message (tracking, lanes, deletes in \
             group order). Against SQS, where the emulator's limit \
             here is {:.0} msgs/s, the engine's share at that rate is {:.1} % of one core.\n\n",
            engine.us_per_msg,
            report.criterion["router_cycle"],
            engine.batch,
            engine.batch_msgs_per_s,
            engine.batch_us_per_msg,
            limit_rate,
            limit_rate * engine.us_per_msg / 1e4,
        );
    }
    md
}

/// Section 10: per round trip, the limit, the no-op run and the
/// latency-bound runs, with what bounds a missed goal.
fn rtt_markdown(report: &Report, plan: &Plan) -> String {
    let all = &report.rtt;
    if all.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "## 10. On a network with a round trip\n\nThe same runs through a TCP proxy of ours that delays each direction by half the round trip (RTT), as a region's SQS endpoint does. The limit: the bare SDK receive+delete loop through the proxy, the best of 4 to 64 calls at once ({} messages over {} groups). The ordered bare loop: the same loop deleting as fifo must, each message only once every earlier one of its group is deleted (batches of ten shared by all loops), the best of 32 to 256 loops; a loop receives again only once its deletes are done. `fifo run --until-empty` with default flags (5 workers) on as many messages, timed until SQS holds none. Latency-bound: {} messages, {} groups of {PER_GROUP}, L = 50 ms, `--workers W --work-ms 50` and no other flag.\n\n",
        plan.rtt_messages,
        plan.groups,
        plan.latency_groups * PER_GROUP,
        plan.latency_groups,
    );
    md += "| RTT (ms) | limit (msgs/s) | limit by calls at once | ordered bare loop (msgs/s), by loops | fifo no-op (msgs/s) | ratio | ratio to the ordered bare loop | LocalStack CPU (cores) | fifo CPU per message (µs) | bare SDK loop CPU per message (µs) | W=16 makespan / bound | W=64 | W=100 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for at in all {
        let by_concurrency: Vec<String> = at
            .limits
            .iter()
            .map(|l| format!("{}: {:.0}", l.concurrency, l.msgs_per_s))
            .collect();
        let ordered_by_loops: Vec<String> = at
            .ordered_limits
            .iter()
            .map(|l| format!("{}: {:.0}", l.loops, l.msgs_per_s))
            .collect();
        let latency: Vec<String> = at
            .latency
            .iter()
            .map(|r| format!("{:.2} / {:.2} s ({:.2})", r.makespan_s, r.bound_s, r.ratio))
            .collect();
        md += &format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} |\n",
            at.rtt_ms,
            at.limit_msgs_per_s,
            by_concurrency.join(", "),
            ordered_by_loops.join(", "),
            at.no_op.msgs_per_s,
            at.no_op.ratio,
            at.no_op.msgs_per_s / at.ordered_limit_msgs_per_s,
            at.no_op.localstack_cpu_share,
            at.no_op.cpu_us_per_msg,
            at.sdk_cpu_us_per_msg,
            latency.join(" | "),
        );
    }
    md += "\n";
    for at in all {
        if at.no_op.ratio >= 0.9 {
            continue;
        }
        let ordered = at.ordered_limit_msgs_per_s;
        let fifo = at.no_op.msgs_per_s;
        md += &format!(
            "**RTT {} ms, no-op ({fifo:.0} of {:.0} msgs/s).** The limit's loops receive ten messages of up to ten groups and delete them in one call. The ordered bare loop (each message deleted only once every earlier one of its group is, one round trip each: fifo's rule before a group's done messages went in one call) reached {ordered:.0} msgs/s in this run; fifo is {:.2} × that. For one group, see section 11.\n\n",
            at.rtt_ms,
            at.limit_msgs_per_s,
            fifo / ordered,
        );
    }
    for at in all {
        let limit = at.limit_msgs_per_s;
        for r in &at.latency {
            if r.ratio <= 1.15 {
                continue;
            }
            let messages = (plan.latency_groups * PER_GROUP) as f64;
            md += &format!(
                "**RTT {} ms, W = {} ({:.2} s against {:.2} s).** The bound needs {:.0} msgs/s through the queue; the emulator's limit through the proxy in this run is {limit:.0} msgs/s, so the {messages:.0} messages need at least {:.2} s of receives and deletes: {:.2} × that.\n\n",
                at.rtt_ms,
                r.workers,
                r.makespan_s,
                r.bound_s,
                messages / r.bound_s,
                messages / limit,
                r.makespan_s / (messages / limit),
            );
        }
    }
    md
}

/// The summary's rows for section 11.
fn hot_group_summary(report: &Report, verdict: impl Fn(bool) -> &'static str) -> String {
    let mut md = String::new();
    for row in &report.hot_group {
        let what = if row.work_ms == 0 {
            "no-op".to_owned()
        } else {
            format!("{} ms of work", row.work_ms)
        };
        let to_bare = row.fifo_msgs_per_s / row.bare_msgs_per_s;
        md += &format!(
            "| one hot group, RTT {} ms, {what}: fifo ≥ 0.90 × the bare SDK loop and ahead of a one-thread boto3 consumer | {to_bare:.2} × bare ({:.0} of {:.0} msgs/s); boto3 {:.0} | {} |\n",
            row.rtt_ms,
            row.fifo_msgs_per_s,
            row.bare_msgs_per_s,
            row.boto3_msgs_per_s,
            verdict(to_bare >= 0.9 && ahead_of(row.fifo_msgs_per_s, row.boto3_msgs_per_s))
        );
        if row.rtt_ms == 20 && row.work_ms == 0 {
            md += &format!(
                "| one hot group, RTT 20 ms, no-op: ≥ 200 msgs/s | {:.0} msgs/s | {} |\n",
                row.fifo_msgs_per_s,
                verdict(row.fifo_msgs_per_s >= 200.0)
            );
        }
    }
    md
}

/// Whether `fifo` is ahead of `other`, or `other` was not measured (NaN).
fn ahead_of(fifo: f64, other: f64) -> bool {
    other.is_nan() || fifo > other
}

/// Section 11.
fn hot_group_markdown(report: &Report) -> String {
    if report.hot_group.is_empty() {
        return String::new();
    }
    let mut md = "## 11. One hot group

Every message in one group, as when one tenant, account or device carries the traffic: a group moves only as fast as its consumer receives, handles and deletes it (SQS hands out no more of a group while any of it is in flight). Through the proxy of section 10 at each RTT. fifo: `fifo send --groups 1`, then `fifo run --until-empty` with default flags (`--work-ms 10` for the work), timed until SQS holds none. The bare SDK loop: one Rust task on the same client, receive ten, handle them one after another, delete them in one `DeleteMessageBatch`, again. boto3: the same loop in Python (boto3 from LocalStack's virtualenv), one thread.\n\n| RTT (ms) | handler | messages | fifo (msgs/s) | bare SDK loop (msgs/s) | boto3, one thread (msgs/s) | fifo ÷ bare | fifo ÷ boto3 | order violations |\n|---|---|---|---|---|---|---|---|---|\n".to_owned();
    for row in &report.hot_group {
        md += &format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} |\n",
            row.rtt_ms,
            if row.work_ms == 0 {
                "no-op".to_owned()
            } else {
                format!("{} ms", row.work_ms)
            },
            row.messages,
            row.fifo_msgs_per_s,
            row.bare_msgs_per_s,
            row.boto3_msgs_per_s,
            row.fifo_msgs_per_s / row.bare_msgs_per_s,
            row.fifo_msgs_per_s / row.boto3_msgs_per_s,
            row.order_violations
        );
    }
    md += "\nA group's done messages leave in one `DeleteMessageBatch`; before, each waited for the previous one's delete, so ten messages took ten round trips (36 msgs/s at RTT 20 in the measurement that opened this work). At RTT 20 fifo passes the plain loops because its next receive is already waiting at SQS when the delete lands, where a loop sends it only after. With 10 ms of work, fifo's handler and the Rust loop both sleep on tokio's timer, which wakes on millisecond ticks and so sleeps about 11 ms for 10: they tie, and boto3's `time.sleep` is that much more precise; the work's timer, not the engine, sets the pace there. At RTT 0 with no work, fifo and LocalStack share the two cores, and every µs of fifo's CPU (section 12) is taken from the emulator.\n\n";
    md
}

/// The top of `perf report` for `fifo run` before this work (built from
/// b705f4e, the same run as section 12), kept for comparison.
const PROFILE_BEFORE: &str = include_str!("profile-before.txt");

/// Section 12.
fn profile_markdown(report: &Report) -> String {
    let Some(profile) = &report.profile else {
        return String::new();
    };
    format!(
        "## 12. Where fifo's CPU goes

`fifo run --until-empty --workers 16` (log handler, no work) on {} messages over 200 groups at RTT 0, under `perf record -F 1999`; below, the functions with at least 1 % of the samples, by self time. CPU per message from a run of its own without the profiler: fifo {:.1} µs, the bare SDK loop (8 loops, same queue contents, same run) {:.1} µs, so fifo's own work is {:.1} µs per message.\n\nReceives no longer pass a per-call configuration: the SDK rebuilt its runtime components for each of them (`RuntimeComponentsBuilder::merge_from`, config-bag lookups); a receive client per long-poll length is built once instead, sharing one HTTP client. Both profiles are flat: the kernel's task switches and wakeups and the allocator lead, and no function of fifo's or of the SDK reaches much more than 1 % by itself, so what is left is spread over the work per call and per message rather than held by one hot spot.\n\nAfter (this run):\n\n```\n{}```\n\nBefore (b705f4e, same command, 20,000 messages):\n\n```\n{}```\n\n",
        profile.messages,
        profile.fifo_cpu_us_per_msg,
        profile.sdk_cpu_us_per_msg,
        profile.fifo_cpu_us_per_msg - profile.sdk_cpu_us_per_msg,
        tidy(&profile.top),
        tidy(PROFILE_BEFORE)
    )
}

/// `perf report` lines without the padding and the empty columns after
/// each symbol.
fn tidy(report: &str) -> String {
    report
        .lines()
        .map(|line| line.trim().trim_end_matches(['-', ' ']).to_owned() + "\n")
        .collect()
}

/// The largest makespan-to-bound ratio of a list of latency-bound runs.
fn worst_ratio(ratios: impl Iterator<Item = f64>) -> f64 {
    ratios.fold(0.0, f64::max)
}

pub(crate) fn markdown(report: &Report, plan: &Plan) -> String {
    let verdict = |met: bool| if met { "**met**" } else { "**missed**" };
    let m = &report.machine;
    let limit = &report.limit;
    let no_op = &report.no_op;
    let engine = &report.engine;
    let skew = &report.skew;
    let mut md = String::new();
    md += "# Benchmarks\n\n";
    md += &format!(
        "Written by `cargo xtask bench{}` on {} ({} cores, {} GiB, {}; {}; LocalStack {}). \
         Every figure is the median of {} runs (criterion's: the mean of its samples); every ratio divides figures measured in this same invocation. \
         LocalStack is one Python process: its CPU share is given in cores (1.0 = one core busy).\n\n",
        if plan.quick { " --quick" } else { "" },
        m.date,
        m.cores,
        m.memory_gib,
        m.cpu,
        m.rustc,
        m.localstack,
        plan.runs
    );
    md += "## Summary\n\n| goal | measured | verdict |\n|---|---|---|\n";
    let run_ratio = no_op.run_ratio;
    let send_ratio = no_op.send_ratio;
    md += &format!(
        "| `fifo run` no-op ≥ 0.90 × the emulator's receive+delete limit | {run_ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
        no_op.run_msgs_per_s,
        limit.receive_delete_msgs_per_s,
        verdict(run_ratio >= 0.9)
    );
    md += &format!(
        "| `fifo send` ≥ 0.90 × the emulator's send limit | {send_ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
        no_op.send_msgs_per_s,
        limit.send_msgs_per_s,
        verdict(send_ratio >= 0.9)
    );
    let worst = worst_ratio(report.latency.iter().map(|r| r.ratio));
    md += &format!(
        "| latency-bound makespan ≤ 1.15 × bound at every W | worst {worst:.2} | {} |\n",
        verdict(worst <= 1.15)
    );
    let skew_ratio = skew.cold_p99_ratio.max(skew.cold_p50_ratio);
    md += &format!(
        "| cold groups with a hot group within 1.2 × cold alone (p50 and p99) | {:.2} (p50), {:.2} (p99) | {} |\n",
        skew.cold_p50_ratio,
        skew.cold_p99_ratio,
        verdict(skew_ratio <= 1.2)
    );
    let engine_best = engine.no_op_msgs_per_s.max(engine.batch_msgs_per_s);
    md += &format!(
        "| engine alone ≥ 1,000,000 msgs/s (no-op, in-memory queue; batches where they help) | {:.0} msgs/s (batches of {}: {:.0}) | {} |\n",
        engine.no_op_msgs_per_s,
        engine.batch,
        engine.batch_msgs_per_s,
        verdict(engine_best >= 1e6)
    );
    md += &format!(
        "| fifo CPU ≤ 25 µs per message end to end | {:.1} µs | {} |\n",
        no_op.fifo_cpu_us_per_msg,
        verdict(no_op.fifo_cpu_us_per_msg <= 25.0)
    );
    md += &format!(
        "| fifo peak RSS ≤ 50 MiB | {:.1} MiB | {} |\n",
        no_op.fifo_peak_rss_mib,
        verdict(no_op.fifo_peak_rss_mib <= 50.0)
    );
    let violations: u64 = no_op.order_violations
        + report
            .scale_out
            .iter()
            .map(|s| s.order_violations)
            .sum::<u64>();
    md += &format!(
        "| order per group intact in every end-to-end run | {violations} violations | {} |\n",
        verdict(violations == 0)
    );
    if let Some(soak) = &report.soak {
        let (reconciled, flat) = (soak.reconciled(), soak.memory_flat());
        let held_ok = soak.held_max <= soak.max_in_flight as u64;
        let ordered = soak.order_violations == 0;
        md += &format!(
            "| soak under random faults: counts reconciled, held messages bounded, RSS flat, order intact | {} messages; {}; held ≤ {}; RSS {:.1} → {:.1} MiB; {} violations | {} |\n",
            soak.messages,
            if reconciled {
                "reconciled"
            } else {
                "not reconciled"
            },
            soak.held_max,
            soak.rss_after_warm_up_mib,
            soak.rss_max_after_warm_up_mib,
            soak.order_violations,
            verdict(reconciled && flat && held_ok && ordered)
        );
    }
    if let Some(SendMemory { runs, .. }) = &report.send_memory
        && let [small, large] = runs.as_slice()
    {
        let flat = large.peak_rss_mib <= 1.5 * small.peak_rss_mib;
        md += &format!(
            "| `fifo send` memory flat whatever `--count` | peak RSS {:.1} MiB for {} messages, {:.1} MiB for {} | {} |\n",
            large.peak_rss_mib,
            large.messages,
            small.peak_rss_mib,
            small.messages,
            verdict(flat)
        );
    }
    for at in &report.rtt {
        let rtt = &at.rtt_ms;
        let ratio = at.no_op.ratio;
        md += &format!(
            "| RTT {rtt} ms: `fifo run` no-op, default flags, ≥ 0.90 × the limit through the proxy | {ratio:.2} ({:.0} of {:.0} msgs/s) | {} |\n",
            at.no_op.msgs_per_s,
            at.limit_msgs_per_s,
            verdict(ratio >= 0.9)
        );
        let worst = worst_ratio(at.latency.iter().map(|r| r.ratio));
        md += &format!(
            "| RTT {rtt} ms: latency-bound makespan ≤ 1.15 × bound at W = 16, 64, 100 | worst {worst:.2} | {} |\n",
            verdict(worst <= 1.15)
        );
    }
    md += &hot_group_summary(report, verdict);
    if let Some(profile) = &report.profile {
        let own = profile.fifo_cpu_us_per_msg - profile.sdk_cpu_us_per_msg;
        md += &format!(
            "| fifo CPU ≤ 40 µs per message end to end at RTT 0 (no-op, section 12) | {:.1} µs | {} |\n",
            profile.fifo_cpu_us_per_msg,
            verdict(profile.fifo_cpu_us_per_msg <= 40.0)
        );
        md += &format!(
            "| fifo's own work (fifo minus the bare SDK loop, same run) ≤ 10 µs per message | {own:.1} µs ({:.1} − {:.1}) | {} |\n",
            profile.fifo_cpu_us_per_msg,
            profile.sdk_cpu_us_per_msg,
            verdict(own <= 10.0)
        );
    }
    md += "\n";

    md += "## 1. The limit: the emulator's own throughput\n\n";
    md += "A tight loop on the same Rust SDK client, best of 4 and 8 concurrent connections, messages over 200 groups.\n\n| call | msgs/s |\n|---|---|\n";
    md += &format!(
        "| `SendMessageBatch` (10 per call) | {:.0} |\n| `ReceiveMessage(10)` + `DeleteMessageBatch` | {:.0} |\n\n",
        limit.send_msgs_per_s, limit.receive_delete_msgs_per_s
    );

    md += &format!(
        "## 2. End to end, no-op handler\n\n{} messages over {} groups. `fifo send --groups {} --count {} --concurrency 8`, then `fifo run --until-empty --workers 16` (log handler, no work), timed until SQS holds no message.\n\n",
        plan.messages, plan.groups, plan.groups, plan.messages
    );
    md += "| what | msgs/s | ratio to the limit | LocalStack CPU (cores) |\n|---|---|---|---|\n";
    md += &format!(
        "| `fifo run` | {:.0} | {run_ratio:.2} | {:.2} |\n| `fifo send` | {:.0} | {send_ratio:.2} | |\n\n",
        no_op.run_msgs_per_s, no_op.localstack_cpu_share, no_op.send_msgs_per_s
    );

    md += &format!(
        "## 3. Latency-bound\n\n{} messages, {} groups of {PER_GROUP}, handler work L = 50 ms (`fifo run --until-empty --workers W --work-ms 50`). Makespan: first handler start to last handler end, from the log handler's lines. With fewer workers than groups, the last group's first start and the refill gap mostly show groups waiting for a free worker; with as many workers as groups, they show the emulator's receive pace.\n\n",
        plan.latency_groups * PER_GROUP,
        plan.latency_groups
    );
    md += "| W | makespan (s) | bound (s) | ratio | last group's first start (s) | refill gap p50 (s) | LocalStack CPU (cores) | verdict |\n|---|---|---|---|---|---|---|---|\n";
    for r in &report.latency {
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} | {} |\n",
            r.workers,
            r.makespan_s,
            r.bound_s,
            r.ratio,
            r.last_group_first_start_s,
            r.refill_gap_p50_s,
            r.localstack_cpu_share,
            verdict(r.ratio <= 1.15)
        );
    }
    md += "\n![makespan and bound against W](benchmarks-latency.svg)\n\n";

    md += &format!(
        "## 4. Skew\n\n{} messages: one hot group holding half, 99 cold groups the rest; W = 16, L = 20 ms, in process on `SqsQueue`. The hot backlog is sent first, then the cold messages, the same way as in the run without the hot group. Time from send (SQS's SentTimestamp) to handler start, per class; the same cold messages without the hot group for comparison.\n\n",
        skew.messages
    );
    md += "| run | cold p50 (s) | cold p99 (s) | hot p50 (s) | hot p99 (s) |\n|---|---|---|---|---|\n";
    for (label, r) in [("with hot", &skew.with_hot), ("cold only", &skew.cold_only)] {
        md += &format!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.cold_p50_s, r.cold_p99_s, r.hot_p50_s, r.hot_p99_s
        );
    }
    md += &format!(
        "\nCold with hot ÷ cold alone: p50 {:.2}, p99 {:.2}.\n\n",
        skew.cold_p50_ratio, skew.cold_p99_ratio
    );

    md += &format!(
        "## 5. The engine alone\n\nThe in-memory queue (SQS FIFO rules, no network). No-op: the criterion benchmarks of `crates/worker-pool/benches/engine.rs`, {} messages over {} groups, W = {}, on a one-thread tokio runtime as in `fifo`; criterion's mean wall time of a run divided by its messages (on one thread, CPU time is at most that).\n\n",
        engine.messages, engine.groups, engine.workers
    );
    md += &format!(
        "| what | figure |\n|---|---|\n| no-op throughput | {:.0} msgs/s |\n| time per message (engine + in-memory queue) | {:.2} µs |\n| no-op throughput, batches of {} | {:.0} msgs/s |\n| time per message, batches of {} | {:.2} µs |\n",
        engine.no_op_msgs_per_s,
        engine.us_per_msg,
        engine.batch,
        engine.batch_msgs_per_s,
        engine.batch,
        engine.batch_us_per_msg
    );
    for (name, ns) in &report.criterion {
        md += &format!("| criterion `{name}` | {ns:.0} ns |\n");
    }
    md += "\nLatency-bound on the in-memory queue in paused time (scheduling alone):\n\n| W | makespan (s) | bound (s) | ratio |\n|---|---|---|---|\n";
    for r in &engine.latency {
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.3} |\n",
            r.workers, r.makespan_s, r.bound_s, r.ratio
        );
    }

    md += &format!(
        "\n## 6. Cost\n\nFrom the `fifo run` processes of (2), sampled from /proc every 10 ms. \
         For comparison, the CPU that the bare SDK loop of (1) spends per message received and \
         deleted (the same calls and nothing else), measured in the benchmark process.\n\n\
         | what | figure | goal |\n|---|---|---|\n\
         | fifo CPU per message | {:.1} µs | ≤ 25 µs |\n\
         | fifo CPU per 10,000 messages | {:.3} s | |\n\
         | bare SDK receive+delete loop, CPU per message | {:.1} µs | |\n\
         | fifo peak RSS | {:.1} MiB | ≤ 50 MiB |\n\n",
        no_op.fifo_cpu_us_per_msg,
        no_op.fifo_cpu_s_per_10k,
        limit.sdk_cpu_us_per_msg,
        no_op.fifo_peak_rss_mib
    );

    md += "## 7. Scale-out\n\n(2) and (3) with several `fifo run` processes on one queue; order per group checked from all processes' log lines together.\n\n| processes | no-op msgs/s | ratio to the limit | order violations | latency-bound makespan, 32 workers in all (s) | bound (s) | ratio |\n|---|---|---|---|---|---|---|\n";
    for s in &report.scale_out {
        md += &format!(
            "| {} | {:.0} | {:.2} | {} | {:.2} | {:.2} | {:.3} |\n",
            s.processes,
            s.no_op_msgs_per_s,
            s.no_op_ratio_to_limit,
            s.order_violations,
            s.latency_makespan_s,
            s.latency_bound_s,
            s.latency_ratio
        );
    }
    if let Some(soak) = &report.soak {
        let (reconciled, flat) = (soak.reconciled(), soak.memory_flat());
        md += &format!(
            "\n## 8. Soak\n\n{} messages over {} groups through the engine on the in-memory queue \
             (one thread, paused time, a producer keeping a backlog of {}), with random faults on \
             every call — {:.0} % of requests lost, {:.0} % of answers lost (a throttling error for \
             {:.0} % of those failures), {:.0} % of calls delayed up to {} ms, {:.1} % of receipt \
             handles refused — and {:.0} % of handler runs failing. The handler checked the order as \
             it went; the counts are reconciled with the queue's.\n\n\
             | what | figure |\n|---|---|\n\
             | queue time / wall time | {:.0} s / {:.1} s |\n\
             | CPU per message (engine + in-memory queue + faults) | {:.2} µs |\n\
             | handler runs (retries and redeliveries included) | {} |\n\
             | received = deleted + handed back + lost + dead-lettered | {} = {} + {} + {} + {} ({}) |\n\
             | the queue: deleted, left | {}, {} ({} deletes took effect without the engine learning it — the answer was lost, or came after the engine had given the message up — so it counted them lost) |\n\
             | held messages: at most (limit), mean | {} ({}), {:.0} |\n\
             | RSS after warm-up, at most after it, at the end | {:.1} MiB, {:.1} MiB, {:.1} MiB ({}) |\n\
             | order violations seen by the handler | {} |\n",
            soak.messages,
            soak.groups,
            soak.backlog,
            soak.faults.lost_requests * 100.0,
            soak.faults.lost_answers * 100.0,
            soak.faults.throttled_share * 100.0,
            soak.faults.delayed * 100.0,
            soak.faults.max_delay_ms,
            soak.faults.stale_handles * 100.0,
            soak.failure_rate * 100.0,
            soak.queue_time_s,
            soak.wall_s,
            soak.cpu_us_per_msg,
            soak.handler_runs,
            soak.received,
            soak.deleted,
            soak.released,
            soak.lost,
            soak.dead_lettered,
            if reconciled {
                "reconciled"
            } else {
                "**not reconciled**"
            },
            soak.queue_deleted,
            soak.queue_left,
            soak.queue_deleted.saturating_sub(soak.deleted),
            soak.held_max,
            soak.max_in_flight,
            soak.held_mean,
            soak.rss_after_warm_up_mib,
            soak.rss_max_after_warm_up_mib,
            soak.rss_end_mib,
            if flat { "flat" } else { "**growing**" },
            soak.order_violations,
        );
    }
    if let Some(SendMemory { date, runs }) = &report.send_memory {
        md += &format!(
            "\n## 9. Send memory\n\n`fifo send --groups 100 --count N --concurrency 8` into a new queue; peak RSS from /proc \
             (VmHWM). `send` generates and reads messages as it sends them, so its memory does not grow with N. \
             Measured on {}.\n\n| N | peak RSS (MiB) | msgs/s | CPU per message (µs) | in the queue after |\n|---|---|---|---|---|\n",
            date
        );
        for r in runs {
            md += &format!(
                "| {} | {:.1} | {:.0} | {:.1} | {} |\n",
                r.messages, r.peak_rss_mib, r.msgs_per_s, r.cpu_us_per_msg, r.stored
            );
        }
    }
    md += "\n";
    md += &rtt_markdown(report, plan);
    md += &hot_group_markdown(report);
    md += &profile_markdown(report);
    md += &bounds(report);
    md += "\n## Reproduce\n\n```sh\ncargo xtask bench           # the full run (about 30 minutes here)\ncargo xtask bench --quick   # a short run (a few minutes)\ncargo xtask bench --rtt 20  # section 10 at one round trip, printed\ncargo xtask bench --hot-only   # section 11, printed\ncargo xtask bench --send-memory-only   # section 9 again, into these figures\ncargo xtask bench --from-json          # this report again from BENCHMARKS.json\n```\n\nRaw figures: [BENCHMARKS.json](BENCHMARKS.json).\n";
    md
}
