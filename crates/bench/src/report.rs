//! What one benchmark run measured, section by section, as written to
//! BENCHMARKS.json and read back by `--from-json`. Rates are msgs/s, times
//! seconds unless a name says otherwise, CPU shares in cores.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) quick: bool,
    pub(crate) runs: usize,
    /// 1.
    pub(crate) limit: Limit,
    /// 2 and 6.
    pub(crate) no_op: NoOp,
    /// 3.
    pub(crate) latency: Vec<Latency>,
    /// 4.
    pub(crate) skew: Skew,
    /// 5: the engine's no-op figures, from its criterion benchmarks.
    pub(crate) engine: Engine,
    /// 5: the router's and the engine's criterion benchmarks, mean ns per
    /// iteration by name.
    pub(crate) criterion: BTreeMap<String, f64>,
    /// 8.
    pub(crate) soak: Option<Soak>,
    /// 7.
    pub(crate) scale_out: Vec<ScaleOut>,
    /// 9.
    pub(crate) send_memory: Option<SendMemory>,
    /// 10.
    pub(crate) rtt: Vec<AtRtt>,
    /// 11.
    #[serde(default)]
    pub(crate) hot_group: Vec<HotGroup>,
    /// 12.
    #[serde(default)]
    pub(crate) profile: Option<Profile>,
}

/// Section 11: one group only, at one round trip and one handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HotGroup {
    pub(crate) rtt_ms: u64,
    /// The handler's work per message.
    pub(crate) work_ms: u64,
    pub(crate) messages: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) fifo_msgs_per_s: f64,
    /// The bare SDK loop: receive ten, handle, delete them in one call.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) bare_msgs_per_s: f64,
    /// The same loop in Python with boto3, one thread; NaN when not run.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) boto3_msgs_per_s: f64,
    pub(crate) all_fifo: Vec<f64>,
    pub(crate) order_violations: u64,
}

/// Section 12: where `fifo run` spends its CPU, from `perf`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) messages: usize,
    /// CPU per message of the profiled run, and of the bare SDK loop on
    /// the same queue contents, in the same run.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) fifo_cpu_us_per_msg: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) sdk_cpu_us_per_msg: f64,
    /// The top of `perf report` (self time by function), or why there is
    /// none.
    pub(crate) top: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) memory_gib: f64,
    pub(crate) cpu: String,
    pub(crate) rustc: String,
    pub(crate) fifo: String,
    pub(crate) localstack: String,
    pub(crate) date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Limit {
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) send_msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) receive_delete_msgs_per_s: f64,
    pub(crate) all_send: Vec<f64>,
    pub(crate) all_receive_delete: Vec<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) sdk_cpu_us_per_msg: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NoOp {
    pub(crate) messages: usize,
    pub(crate) groups: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) run_msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) run_ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) send_msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) send_ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) fifo_cpu_us_per_msg: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) fifo_cpu_s_per_10k: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) fifo_peak_rss_mib: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) localstack_cpu_share: f64,
    pub(crate) order_violations: u64,
    pub(crate) runs: Vec<RunResult>,
}

/// One end-to-end `fifo run` (one or more processes on one queue).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) drain_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cpu_us_per_msg: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) peak_rss_mib: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) localstack_cpu_share: f64,
    pub(crate) order_violations: u64,
}

/// A latency-bound run at W workers: makespan against the bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) workers: usize,
    pub(crate) messages: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) makespan_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) bound_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) localstack_cpu_share: f64,
    pub(crate) all_makespans: Vec<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) last_group_first_start_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) refill_gap_p50_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Skew {
    pub(crate) messages: usize,
    pub(crate) with_hot: SkewRun,
    pub(crate) cold_only: SkewRun,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cold_p50_ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cold_p99_ratio: f64,
}

/// Send-to-start times, per class of group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SkewRun {
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cold_p50_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cold_p99_s: f64,
    /// NaN (null) without a hot group.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) hot_p50_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) hot_p99_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Engine {
    /// Messages, groups and workers of one run of the engine's criterion
    /// benchmarks.
    pub(crate) messages: usize,
    pub(crate) groups: usize,
    pub(crate) workers: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) no_op_msgs_per_s: f64,
    /// Wall time on one thread: its CPU time is at most this.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) us_per_msg: f64,
    pub(crate) batch: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) batch_msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) batch_us_per_msg: f64,
    /// In paused time on the in-memory queue.
    pub(crate) latency: Vec<EngineLatency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EngineLatency {
    pub(crate) workers: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) makespan_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) bound_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Soak {
    pub(crate) messages: usize,
    pub(crate) groups: usize,
    pub(crate) backlog: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) failure_rate: f64,
    pub(crate) faults: SoakFaults,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) queue_time_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) wall_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) handler_runs: u64,
    pub(crate) received: u64,
    pub(crate) succeeded: u64,
    pub(crate) retried: u64,
    pub(crate) failed: u64,
    pub(crate) deleted: u64,
    pub(crate) released: u64,
    pub(crate) lost: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) accounted: u64,
    pub(crate) queue_deleted: u64,
    pub(crate) queue_left: u64,
    pub(crate) queue_dead_letters: u64,
    pub(crate) held_max: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) held_mean: f64,
    pub(crate) max_in_flight: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) rss_after_warm_up_mib: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) rss_max_after_warm_up_mib: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) rss_end_mib: f64,
    pub(crate) order_violations: u64,
    pub(crate) samples: Vec<SoakSample>,
}

impl Soak {
    /// Whether the counts add up: every reception accounted for, the queue
    /// emptied, every message deleted there once.
    pub(crate) fn reconciled(&self) -> bool {
        self.accounted == self.received
            && self.queue_left == 0
            && self.queue_deleted == self.messages as u64
    }

    /// Whether RSS stayed within 10 % (and 1 MiB) of its level after the
    /// warm-up.
    pub(crate) fn memory_flat(&self) -> bool {
        self.rss_max_after_warm_up_mib <= self.rss_after_warm_up_mib * 1.1 + 1.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SoakFaults {
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) lost_requests: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) lost_answers: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) throttled_share: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) delayed: f64,
    pub(crate) max_delay_ms: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) stale_handles: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SoakSample {
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) queue_time_s: f64,
    pub(crate) succeeded: u64,
    pub(crate) held: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) rss_mib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScaleOut {
    pub(crate) processes: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) no_op_msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) no_op_ratio_to_limit: f64,
    pub(crate) order_violations: u64,
    pub(crate) latency_workers_total: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) latency_makespan_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) latency_bound_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) latency_ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendMemory {
    pub(crate) date: String,
    pub(crate) runs: Vec<SendMemoryRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendMemoryRun {
    pub(crate) messages: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) peak_rss_mib: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) stored: u64,
}

/// Section 10 at one round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AtRtt {
    pub(crate) rtt_ms: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) limit_msgs_per_s: f64,
    pub(crate) limits: Vec<ByConcurrency>,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) ordered_limit_msgs_per_s: f64,
    pub(crate) ordered_limits: Vec<ByLoops>,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) sdk_cpu_us_per_msg: f64,
    pub(crate) no_op: RttNoOp,
    pub(crate) latency: Vec<RttLatency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ByConcurrency {
    pub(crate) concurrency: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) msgs_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ByLoops {
    pub(crate) loops: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) msgs_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RttNoOp {
    pub(crate) messages: usize,
    pub(crate) groups: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) msgs_per_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) ratio: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) cpu_us_per_msg: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) localstack_cpu_share: f64,
    pub(crate) order_violations: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RttLatency {
    pub(crate) workers: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) makespan_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) bound_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) ratio: f64,
    pub(crate) all_makespans: Vec<f64>,
}

/// JSON has no NaN: serde_json writes a figure that could not be measured
/// (NaN) as null, and this reads it back, so that every file this program
/// writes, it can read (`--from-json`).
fn nan_if_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_that_could_not_be_measured_reads_back_as_nan() {
        let run = SkewRun {
            cold_p50_s: 1.5,
            cold_p99_s: 2.0,
            hot_p50_s: f64::NAN,
            hot_p99_s: f64::NAN,
        };
        let json = serde_json::to_string(&run).unwrap();
        assert!(json.contains(r#""hot_p50_s":null"#), "{json}");
        let back: SkewRun = serde_json::from_str(&json).unwrap();
        assert_eq!(back.cold_p50_s, 1.5);
        assert!(back.hot_p50_s.is_nan());
    }
}
