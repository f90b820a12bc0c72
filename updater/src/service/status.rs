//! What the service is doing, as its D-Bus properties show it (pure): the operation, its
//! phase, progress that only rises within one operation, the last error.

use crate::progress::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Preparing,
    Writing,
    Verifying,
    Done,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Preparing => "preparing",
            Phase::Writing => "writing",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// How an operation ended, as the `Completed` signal says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    Success,
    NothingToDo,
    Refused,
    Failed,
    Cancelled,
}

impl Completion {
    pub fn name(self) -> &'static str {
        match self {
            Completion::Success => "success",
            Completion::NothingToDo => "nothing-to-do",
            Completion::Refused => "refused",
            Completion::Failed => "failed",
            Completion::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `install`, or empty when idle.
    pub operation: String,
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub last_error: String,
}

impl Default for ServiceStatus {
    fn default() -> ServiceStatus {
        ServiceStatus {
            operation: String::new(),
            phase: Phase::Idle,
            bytes_done: 0,
            bytes_total: 0,
            last_error: String::new(),
        }
    }
}

impl ServiceStatus {
    pub fn busy(&self) -> bool {
        !self.operation.is_empty()
    }

    pub fn start(&mut self, operation: &str) {
        *self = ServiceStatus {
            operation: operation.to_owned(),
            phase: Phase::Preparing,
            last_error: std::mem::take(&mut self.last_error),
            ..ServiceStatus::default()
        };
    }

    /// Applies an install event; true when the phase changed (worth a signal at once).
    pub fn apply(&mut self, event: &Event<'_>) -> bool {
        let before = self.phase;
        match event {
            Event::Started { total_bytes, .. } => {
                self.bytes_total = *total_bytes;
                self.phase = Phase::Writing;
            }
            Event::Written { bytes } => {
                self.bytes_done = (self.bytes_done + bytes).min(self.bytes_total);
            }
            Event::Verifying | Event::Finished => self.phase = Phase::Verifying,
            Event::Message(_) => {}
        }
        self.phase != before
    }

    /// Whole percent of the image written; 100 only once the operation succeeded.
    pub fn percent(&self) -> u32 {
        match self.phase {
            Phase::Done => 100,
            _ if self.bytes_total == 0 => 0,
            _ => ((self.bytes_done * 100 / self.bytes_total) as u32).min(99),
        }
    }

    pub fn finish(&mut self, completion: Completion, message: &str) {
        self.operation.clear();
        self.phase = match completion {
            Completion::Success | Completion::NothingToDo => Phase::Done,
            Completion::Refused | Completion::Failed => Phase::Failed,
            Completion::Cancelled => Phase::Cancelled,
        };
        if matches!(completion, Completion::Failed | Completion::Refused) {
            self.last_error = message.to_owned();
        }
        if completion == Completion::NothingToDo {
            self.bytes_done = self.bytes_total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanSummary;
    use crate::slot::Slot;

    #[test]
    fn progress_rises_to_100_only_on_success() {
        let mut status = ServiceStatus::default();
        status.start("install");
        assert!(status.busy());
        let plan = PlanSummary {
            image_bytes: 1000,
            ..PlanSummary::default()
        };
        assert!(status.apply(&Event::Started {
            version: "2.0",
            slot: Slot::B,
            plan: &plan,
            total_bytes: 1000,
        }));
        let mut seen = vec![status.percent()];
        for _ in 0..12 {
            status.apply(&Event::Written { bytes: 100 });
            seen.push(status.percent());
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(status.percent(), 99, "written is not done");
        assert!(status.apply(&Event::Verifying));
        status.finish(Completion::Success, "installed");
        assert_eq!(
            (status.percent(), status.phase, status.busy()),
            (100, Phase::Done, false)
        );
    }

    #[test]
    fn a_failure_keeps_its_error_until_the_next_failure() {
        let mut status = ServiceStatus::default();
        status.start("install");
        status.finish(Completion::Failed, "no route to host");
        assert_eq!(status.last_error, "no route to host");
        status.start("install");
        status.finish(Completion::Cancelled, "cancelled");
        assert_eq!(status.phase, Phase::Cancelled);
        assert_eq!(status.last_error, "no route to host");
        assert_eq!(status.percent(), 0);
    }
}
