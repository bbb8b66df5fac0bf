//! An in-memory queue that follows the SQS FIFO rules the engine relies on,
//! for fast tests and benchmarks of the engine alone: messages of a group
//! come in send order; while any message of a group is in flight the group
//! is locked; a message reappears when its visibility timeout ends; receive
//! counts grow per delivery; after `max_receive_count` deliveries a message
//! moves to the dead-letter list; each delivery gets a new receipt handle and
//! only the latest, unexpired one works. Time is tokio's, so tests can pause
//! and advance it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fifo_handler::Message;
use fifo_sqs_client::{EntryFailure, Error, ReceiveOptions, ReceiveOutput, ReceivedMessage};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::Queue;

#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    /// Every group ever sent to; `group_index` finds one by name.
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    /// Where the next receive starts looking, so groups are served round-robin.
    next_group: usize,
    /// Current receipt handle → (group index, sequence).
    handles: HashMap<String, (usize, u64)>,
    dead_letters: Vec<Stored>,
    next_sequence: u64,
    undeleted: usize,
    max_receive_count: Option<u32>,
    visibility_timeout: u32,
}

#[derive(Debug, Default)]
struct Group {
    name: String,
    /// Undeleted messages in send order. Receives always take a group from
    /// its front, so the delivered messages form a prefix.
    messages: VecDeque<Stored>,
    /// The latest visibility deadline of the delivered prefix: the group is
    /// locked until then.
    locked_until: Option<Instant>,
}

impl Group {
    fn relock(&mut self) {
        self.locked_until = self
            .messages
            .iter()
            .take_while(|m| m.receipt_handle.is_some())
            .map(|m| m.visible_at)
            .max();
    }

    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    sequence: u64,
    receive_count: u32,
    /// Some while delivered and not yet deleted.
    receipt_handle: Option<String>,
    visible_at: Instant,
}

impl Stored {
    fn in_flight(&self, now: Instant) -> bool {
        self.receipt_handle.is_some() && self.visible_at > now
    }
}

impl MemoryQueue {
    /// A queue with a 30 s default visibility timeout and no redrive.
    pub fn new() -> MemoryQueue {
        MemoryQueue::with_redrive(None)
    }

    /// A queue that moves a message to its dead-letter list on the receive
    /// after its `max_receive_count`-th.
    pub fn with_redrive(max_receive_count: Option<u32>) -> MemoryQueue {
        let queue = MemoryQueue::default();
        {
            let mut state = queue.lock();
            state.max_receive_count = max_receive_count;
            state.visibility_timeout = 30;
        }
        queue
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("no panics while the lock is held")
    }

    pub fn send(&self, group_id: &str, body: &str) {
        let mut state = self.lock();
        state.next_sequence += 1;
        state.undeleted += 1;
        let sequence = state.next_sequence;
        let message = Stored {
            id: format!("m-{sequence}"),
            body: body.to_owned(),
            sequence,
            receive_count: 0,
            receipt_handle: None,
            visible_at: Instant::now(),
        };
        let index = match state.group_index.get(group_id) {
            Some(index) => *index,
            None => {
                state.groups.push(Group {
                    name: group_id.to_owned(),
                    ..Group::default()
                });
                let index = state.groups.len() - 1;
                state.group_index.insert(group_id.to_owned(), index);
                index
            }
        };
        state.groups[index].messages.push_back(message);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Messages not deleted (visible or in flight).
    pub fn undeleted(&self) -> usize {
        self.lock().undeleted
    }

    /// Bodies moved to the dead-letter list, in the order they moved.
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock()
            .dead_letters
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Takes what one receive returns now: whole runs of visible messages
    /// from unlocked groups, visiting groups round-robin.
    fn take(&self, options: &ReceiveOptions, now: Instant) -> Vec<ReceivedMessage> {
        let mut state = self.lock();
        let state = &mut *state;
        let visibility = Duration::from_secs(u64::from(
            options
                .visibility_timeout
                .unwrap_or(state.visibility_timeout),
        ));
        let wanted = options.max_messages as usize;
        let mut taken = Vec::new();
        let count = state.groups.len();
        let start = state.next_group;
        for step in 0..count {
            if taken.len() == wanted {
                break;
            }
            let group_index = (start + step) % count;
            let entry = &mut state.groups[group_index];
            // A group with a message in flight is locked; a later message
            // never passes an invisible earlier one.
            if entry.messages.is_empty() || entry.is_locked(now) {
                continue;
            }
            state.next_group = (group_index + 1) % count;
            let name = &entry.name;
            let group = &mut entry.messages;
            let mut index = 0;
            while taken.len() < wanted && index < group.len() && group[index].visible_at <= now {
                let exhausted = state
                    .max_receive_count
                    .is_some_and(|max| group[index].receive_count >= max);
                if exhausted {
                    let moved = group.remove(index).expect("in range");
                    if let Some(handle) = &moved.receipt_handle {
                        state.handles.remove(handle);
                    }
                    state.undeleted -= 1;
                    state.dead_letters.push(moved);
                    continue;
                }
                let message = &mut group[index];
                message.receive_count += 1;
                let handle = format!("{}#{}", message.id, message.receive_count);
                if let Some(old) = message.receipt_handle.replace(handle.clone()) {
                    state.handles.remove(&old);
                }
                state
                    .handles
                    .insert(handle.clone(), (group_index, message.sequence));
                message.visible_at = now + visibility;
                taken.push(ReceivedMessage {
                    message_id: message.id.clone(),
                    receipt_handle: handle,
                    body: message.body.clone(),
                    group_id: name.clone(),
                    sequence_number: format!("{:020}", message.sequence),
                    receive_count: message.receive_count,
                    sent_timestamp_ms: 0,
                    attributes: Default::default(),
                });
                index += 1;
            }
            entry.relock();
        }
        taken
    }

    /// When the next invisible message becomes visible again.
    fn next_visible_at(&self, now: Instant) -> Option<Instant> {
        self.lock()
            .groups
            .iter()
            .filter_map(|group| group.locked_until)
            .filter(|at| *at > now)
            .min()
    }

    /// Removes the in-flight message with this receipt handle from its group,
    /// or sets its visibility; stale or expired handles fail.
    fn apply(
        &self,
        handle: &str,
        visibility: Option<u32>,
        now: Instant,
    ) -> Result<Option<Stored>, String> {
        let mut state = self.lock();
        let state = &mut *state;
        let stale = || format!("receipt handle {handle} is stale or expired");
        let (group_index, sequence) = *state.handles.get(handle).ok_or_else(stale)?;
        let entry = &mut state.groups[group_index];
        let group = &mut entry.messages;
        let position = group
            .iter()
            .position(|m| m.sequence == sequence)
            .ok_or_else(stale)?;
        if !group[position].in_flight(now) {
            return Err(stale());
        }
        match visibility {
            Some(seconds) => {
                group[position].visible_at = now + Duration::from_secs(u64::from(seconds));
                entry.relock();
                Ok(None)
            }
            None => {
                let removed = group.remove(position).expect("found");
                entry.relock();
                state.handles.remove(handle);
                state.undeleted -= 1;
                Ok(Some(removed))
            }
        }
    }

    fn apply_all(&self, entries: &[(&str, Option<u32>)]) -> Vec<EntryFailure> {
        let now = Instant::now();
        let failures = entries
            .iter()
            .enumerate()
            .filter_map(|(index, (handle, visibility))| {
                let message = self.apply(handle, *visibility, now).err()?;
                Some(EntryFailure {
                    index,
                    code: "ReceiptHandleIsInvalid".to_owned(),
                    message,
                })
            })
            .collect();
        self.changed.notify_waiters();
        failures
    }
}

impl Queue for MemoryQueue {
    async fn receive(&self, options: &ReceiveOptions) -> Result<ReceiveOutput, Error> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(options.wait_seconds));
        loop {
            // Register for a wake-up before looking, so no change is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let taken = self.take(options, now);
            if !taken.is_empty() || now >= deadline {
                return Ok(ReceiveOutput {
                    messages: taken,
                    malformed: Vec::new(),
                });
            }
            let wake = self
                .next_visible_at(now)
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt_handles: &[&str]) -> Result<Vec<EntryFailure>, Error> {
        let entries: Vec<_> = receipt_handles.iter().map(|h| (*h, None)).collect();
        Ok(self.apply_all(&entries))
    }

    async fn change_visibility(&self, entries: &[(&str, u32)]) -> Result<Vec<EntryFailure>, Error> {
        let entries: Vec<_> = entries.iter().map(|(h, s)| (*h, Some(*s))).collect();
        Ok(self.apply_all(&entries))
    }

    async fn dead_letter(&self, receipt_handle: &str, _message: &Message) -> Result<(), Error> {
        let moved = self
            .apply(receipt_handle, None, Instant::now())
            .map_err(|message| Error::InvalidParameter { message })?;
        self.lock().dead_letters.extend(moved);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.undeleted() == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max: u32, wait: u32) -> ReceiveOptions {
        ReceiveOptions {
            max_messages: max,
            wait_seconds: wait,
            visibility_timeout: Some(10),
            attempt_id: None,
        }
    }

    fn bodies(messages: &[ReceivedMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.body.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_is_locked_while_one_of_its_messages_is_in_flight() {
        let queue = MemoryQueue::new();
        for body in ["a1", "a2", "b1"] {
            queue.send(&body[..1], body);
        }
        let first = queue.receive(&options(1, 0)).await.unwrap().messages;
        assert_eq!(bodies(&first), ["a1"]);
        let second = queue.receive(&options(10, 0)).await.unwrap().messages;
        assert_eq!(bodies(&second), ["b1"], "group a is locked");
        queue.delete(&[&first[0].receipt_handle]).await.unwrap();
        let third = queue.receive(&options(10, 0)).await.unwrap().messages;
        assert_eq!(bodies(&third), ["a2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_reappear_after_their_visibility_timeout_with_a_new_handle() {
        let queue = MemoryQueue::new();
        queue.send("g", "x");
        let first = queue.receive(&options(10, 0)).await.unwrap().messages;
        let started = Instant::now();
        let again = queue.receive(&options(10, 20)).await.unwrap().messages;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "long poll woke at visibility"
        );
        assert_eq!(again[0].receive_count, 2);
        let stale = queue.delete(&[&first[0].receipt_handle]).await.unwrap();
        assert_eq!(stale.len(), 1, "an old receipt handle fails");
        assert!(
            queue
                .delete(&[&again[0].receipt_handle])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(queue.undeleted(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn redrive_moves_a_message_after_max_receives_and_the_group_continues() {
        let queue = MemoryQueue::with_redrive(Some(2));
        queue.send("g", "poison");
        queue.send("g", "next");
        for _ in 0..2 {
            let got = queue.receive(&options(1, 0)).await.unwrap().messages;
            assert_eq!(bodies(&got), ["poison"]);
            queue
                .change_visibility(&[(&got[0].receipt_handle, 0)])
                .await
                .unwrap();
        }
        let got = queue.receive(&options(10, 0)).await.unwrap().messages;
        assert_eq!(bodies(&got), ["next"]);
        assert_eq!(queue.dead_letters(), ["poison"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_wakes_when_a_message_arrives() {
        let queue = MemoryQueue::new();
        let sender = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sender.send("g", "late");
        });
        let started = Instant::now();
        let got = queue.receive(&options(10, 20)).await.unwrap().messages;
        assert_eq!(bodies(&got), ["late"]);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
