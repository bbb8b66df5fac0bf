//! Running handlers: dispatch in the router's order, outcomes, in-process
//! retries, and cancelling a handler (waiting out its kill grace).

use super::*;

impl<Q: Queue, H: Handler> Engine<Q, H> {
    /// Starts handlers while workers are free: due retries first, then the
    /// next ready lane.
    pub(super) fn dispatch(&mut self) {
        while self.busy_workers < self.config.workers {
            if let Some(limit) = self.config.limit {
                let succeeded = self.counters.snapshot().succeeded;
                if succeeded + self.busy_workers as u64 >= limit {
                    return;
                }
            }
            let key = match self.retry_ready.pop_front() {
                Some(key) => key,
                None if self.phase == Phase::Running => match self.router.take_next() {
                    Some((_, key)) => key,
                    None => return,
                },
                None => return,
            };
            self.start(key);
        }
    }

    pub(super) fn start(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        if self.at_risk(tracked, Instant::now()) {
            return self.lose(key, "its lease was about to run out when its turn came");
        }
        let tracked = self.tracked.get_mut(&key).expect("checked");
        let task = self.workers.spawn(work(
            self.handler.clone(),
            tracked.message.clone(),
            self.config.handler_timeout,
            key,
        ));
        self.worker_keys.insert(task.id(), key);
        tracked.state = State::Running(task);
        self.busy_workers += 1;
    }

    pub(super) fn on_worker(
        &mut self,
        joined: Result<(tokio::task::Id, (Key, Attempt)), JoinError>,
    ) {
        let (id, key, attempt) = match joined {
            Ok((id, (key, attempt))) => (id, key, Some(attempt)),
            Err(err) => match self.worker_keys.get(&err.id()) {
                Some(&key) => (err.id(), key, None),
                None => return,
            },
        };
        self.worker_keys.remove(&id);
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        match (&tracked.state, attempt) {
            (State::Running(_), Some(attempt)) => {
                self.busy_workers -= 1;
                tracked.state = State::InLane;
                self.on_attempt(key, attempt);
            }
            // Cancelled, but the handler had already ended by itself: no
            // need to wait out the kill grace.
            (State::Cancelling { then }, Some(_)) => {
                let then = *then;
                self.cancel_done(key, then);
            }
            // Cancelled: it ends when the kill grace passes (see CancelDone).
            (_, None) => {}
            _ => {}
        }
    }

    pub(super) fn on_attempt(&mut self, key: Key, attempt: Attempt) {
        let group = self.tracked[&key].message.group_id.clone();
        let (reason, cut_off) = match attempt {
            Attempt::Succeeded => {
                self.counters.add_succeeded();
                self.router.finished(&group, key);
                if self
                    .config
                    .limit
                    .is_some_and(|limit| self.counters.snapshot().succeeded >= limit)
                {
                    self.shutdown.cancel();
                }
                return;
            }
            Attempt::Failed { reason, cut_off } => (reason, cut_off),
        };
        let retries = self.config.retries;
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        let id = tracked.message.id.clone();
        if self.phase == Phase::Running && tracked.attempts < retries {
            tracked.attempts += 1;
            tracked.state = State::BackingOff;
            let attempt = tracked.attempts;
            self.counters.add_retried();
            let mut delay =
                backoff::jittered(attempt, self.config.backoff_base, self.config.backoff_max);
            if cut_off {
                // The cut-off handler may still be ending (an exec handler's
                // process group gets the kill grace): never run it twice at once.
                delay = delay.max(self.config.kill_grace() + KILL_MARGIN);
            }
            tracing::info!(
                "message {id} of group {group} failed ({reason}); retry {attempt} of {retries} in {delay:?}"
            );
            self.add_timer(Instant::now() + delay, Timer::Retry(key));
            return;
        }

        self.counters.add_failed();
        if cut_off {
            tracked.kill_ends = Some(Instant::now() + self.config.kill_grace() + KILL_MARGIN);
        }
        let receive_count = tracked.message.receive_count;
        let last_receive = self
            .config
            .max_receive_count
            .is_some_and(|max| receive_count >= max);
        if self.phase == Phase::Running && last_receive {
            tracing::warn!(
                "message {id} of group {group} failed on its last allowed receive ({reason}); moving it to the dead-letter queue"
            );
            tracked.dead_letter = true;
            self.router.finished(&group, key);
            return;
        }
        if self.phase == Phase::Running {
            let seconds = backoff::release_seconds(
                receive_count,
                self.config.backoff_base,
                self.config.backoff_max,
            );
            tracked.release_after = Duration::from_secs(u64::from(seconds));
            tracing::warn!(
                "message {id} of group {group} failed after {} attempts ({reason}); it and the rest of its group go back to the queue in {seconds} s",
                tracked.attempts + 1,
            );
        } else {
            tracing::warn!(
                "message {id} of group {group} failed ({reason}); handing it back with the rest of its group"
            );
        }
        self.router.failed(&group, key);
    }

    pub(super) fn on_retry_due(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if !matches!(tracked.state, State::BackingOff) {
            return;
        }
        if self.phase == Phase::Running {
            self.retry_ready.push_back(key);
        } else {
            tracked.state = State::InLane;
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
    }

    /// Cancels a running handler; it counts as running until it ended.
    pub(super) fn cancel(&mut self, key: Key, then: AfterCancel) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        match &tracked.state {
            State::Running(task) => {
                task.abort();
                tracked.state = State::Cancelling { then };
                let at = Instant::now() + self.config.kill_grace();
                self.add_timer(at, Timer::CancelDone(key));
            }
            State::Cancelling { .. } => tracked.state = State::Cancelling { then },
            _ => {}
        }
    }

    pub(super) fn cancel_done(&mut self, key: Key, then: AfterCancel) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if !matches!(tracked.state, State::Cancelling { .. }) {
            return;
        }
        self.busy_workers -= 1;
        match then {
            AfterCancel::Lose => {
                self.untrack(key);
                self.counters.add_lost(1);
            }
            AfterCancel::HandBack => {
                tracked.state = State::InLane;
                let group = tracked.message.group_id.clone();
                self.router.failed(&group, key);
            }
        }
    }
}

/// Beyond the kill grace, for the killed processes to be gone.
const KILL_MARGIN: Duration = Duration::from_millis(500);

/// Runs the handler on one message. A panic is caught and becomes a
/// failure of that message alone; a timeout drops the handler's future
/// (an exec handler then ends its process group).
pub(super) async fn work<H: Handler>(
    handler: Arc<H>,
    message: Arc<Message>,
    timeout: Option<Duration>,
    key: Key,
) -> (Key, Attempt) {
    let handled = std::panic::AssertUnwindSafe(handler.handle(&message)).catch_unwind();
    let joined = match timeout {
        Some(limit) => match tokio::time::timeout(limit, handled).await {
            Ok(joined) => joined,
            Err(_) => {
                let reason = format!("handler timed out after {limit:?}");
                return (
                    key,
                    Attempt::Failed {
                        reason,
                        cut_off: true,
                    },
                );
            }
        },
        None => handled.await,
    };
    let attempt = match joined {
        Ok(Ok(())) => Attempt::Succeeded,
        Ok(Err(err)) => Attempt::Failed {
            reason: err.to_string(),
            cut_off: false,
        },
        Err(_panic) => Attempt::Failed {
            reason: "handler panicked".to_owned(),
            cut_off: false,
        },
    };
    (key, attempt)
}
