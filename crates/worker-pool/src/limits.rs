//! The values a [`PoolConfig`](crate::PoolConfig) may take, written once:
//! [`PoolConfig::check`](crate::PoolConfig::check) holds a configuration to
//! them, and a program that reads settings can take its ranges from here.

use std::ops::RangeInclusive;

/// Messages per receive: SQS returns at most 10.
pub const MAX_MESSAGES: RangeInclusive<u32> = 1..=10;

/// Seconds a receive long-polls: SQS waits at most 20.
pub const WAIT_TIME_SECONDS: RangeInclusive<u32> = 0..=20;

/// Seconds of visibility set on receive and renewed by the heartbeat: SQS
/// allows up to 12 hours, and the engine needs at least 1 to keep a lease.
pub const VISIBILITY_TIMEOUT: RangeInclusive<u32> = 1..=43_200;

/// SQS keeps a message invisible for at most this long after a receive.
pub const MAX_INVISIBLE_SECONDS: u32 = *VISIBILITY_TIMEOUT.end();

/// The most receives under way at once when they adapt.
pub const MAX_POLLERS: usize = 16;

/// Handler starts per second, for `max_rate` and `group_rate`: one every
/// 1000 s at the slowest, one a microsecond at the fastest.
pub const RATE: RangeInclusive<f64> = 0.001..=1_000_000.0;

/// The longest visibility timeout with which a blocked message can be kept
/// at all: an hour less than SQS's 12 hours (the engine hands a blocked
/// message back a visibility timeout and five minutes before them).
pub const MAX_BLOCKING_VISIBILITY_TIMEOUT: u32 = MAX_INVISIBLE_SECONDS - 3600;
