//! The domain's values, shared by the pipeline that decides them, the ledger that stores them and
//! the commands that show them: a row's state, why it failed, what one attempt changes, how a run
//! ended and what it counted, and the one decision both `run` and `reconcile` make about a sheet
//! row the ledger already knows (send it, it is done, it drifted).
//!
//! Nothing here does I/O. The ledger stores these values as the plain words of `as_str`.

use serde::{Deserialize, Serialize};

use crate::input::Row;

/// Row states, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    InFlight,
    Succeeded,
    AlreadyCircled,
    Failed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Pending,
        State::InFlight,
        State::Succeeded,
        State::AlreadyCircled,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Succeeded => "succeeded",
            State::AlreadyCircled => "already_circled",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Done: never sent again.
    pub fn is_done(self) -> bool {
        matches!(self, State::Succeeded | State::AlreadyCircled)
    }
}

/// Why a row failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No believable answer after every attempt: retried on the next run.
    Transient,
    /// The gateway refused the row: sent again only when it changes or with `--retry-failed`.
    Permanent,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
        }
    }

    pub fn parse(s: &str) -> Option<FailureKind> {
        match s {
            "transient" => Some(FailureKind::Transient),
            "permanent" => Some(FailureKind::Permanent),
            _ => None,
        }
    }
}

/// What an attempt changes in its row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowUpdate {
    pub state: State,
    pub failure: Option<FailureKind>,
    /// Already circled after an earlier attempt whose outcome was unknown.
    pub ambiguous: bool,
    /// This or an earlier attempt may have reached the gateway without a believable answer.
    pub maybe_sent: bool,
    pub pms_label: Option<String>,
    /// `pms_label` came from an answer whose signature did not verify.
    pub label_unverified: bool,
    /// Whether the answer could not be verified (`Some(true)`), was (`Some(false)`), or no
    /// answer came (`None`: the row keeps what it had).
    pub answer_unverified: Option<bool>,
    pub result_code: Option<String>,
    pub result_message: Option<String>,
    pub tracer_id: Option<String>,
}

/// How a run ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    Completed,
    Interrupted,
    Aborted,
}

impl RunEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Aborted => "aborted",
        }
    }
}

/// What a run counted: what happened, not what was planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub rows_read: u64,
    /// Rows the run planned to send (pending after reading the input).
    pub to_send: u64,
    /// Rows at least one request of this run left for.
    pub sent: u64,
    pub succeeded: u64,
    pub already_circled: u64,
    pub failed: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub already_done: u64,
    pub drifted: u64,
    /// Rows whose last answer could not be verified (label kept, row still pending).
    pub unverified: u64,
    /// Requests the gateway throttled (not processed; sent again).
    pub throttled: u64,
}

/// What the ledger decided for one sheet row (a sighting of an identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// Not known, or not done: this run sends it (with the payload the sheet now gives).
    Send,
    /// Succeeded or already circled earlier, same payload: not sent again.
    Done,
    /// Done earlier, but the sheet now says something else: never sent, reported.
    Drifted(String),
    /// Failed for good earlier with the same payload: sent again only with `--retry-failed`.
    FailedBefore,
}

/// What the ledger knows of an identity, as far as a new sighting is concerned.
#[derive(Debug, Clone)]
pub struct Known<'a> {
    pub row: &'a Row,
    pub state: State,
    pub failure: Option<FailureKind>,
}

/// The one decision about a sheet row the ledger already knows, used by `run` (to send or not)
/// and `reconcile` (to report). A store that has a mall is never sent again: the API cannot move
/// it, so a changed mall or name is drift for a person. A row refused for good is sent again
/// only when the sheet changed it, or when asked to.
pub fn sighting(known: Option<&Known<'_>>, sheet: &Row, retry_failed: bool) -> Sighting {
    let Some(k) = known else {
        return Sighting::Send;
    };
    if k.state.is_done() {
        let differences = k.row.payload_differences(sheet);
        return if differences.is_empty() {
            Sighting::Done
        } else {
            Sighting::Drifted(format!(
                "{} earlier; the sheet now says {}",
                k.state.as_str(),
                differences.join(", ")
            ))
        };
    }
    if k.state == State::Failed
        && k.failure == Some(FailureKind::Permanent)
        && !retry_failed
        && k.row.same_payload(sheet)
    {
        return Sighting::FailedBefore;
    }
    Sighting::Send
}

/// A store answered `STORE_IS_CIRCLED` after an earlier attempt with an unknown outcome: that
/// earlier call most likely circled it, with what *it* sent. When that differs from what this
/// attempt sent (the sheet changed in between), AlipayHK most likely holds the earlier payload:
/// drift, with the detail to show. `None` when they are the same.
pub fn circled_with_earlier_payload(earlier: &Row, now: &Row) -> Option<String> {
    let differences = earlier.payload_differences(now);
    (!differences.is_empty()).then(|| {
        format!(
            "an earlier request whose outcome was unknown most likely circled this store with \
             what it sent; the sheet now says {}",
            differences.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::SaveWay;

    fn row(mall: &str, name: &str) -> Row {
        Row {
            save_way: SaveWay::MerchantPms,
            ipay_trade_no: String::new(),
            partner_id: "2088".into(),
            merchant_id: "M1".into(),
            merchant_name: name.into(),
            store_id: "S1".into(),
            store_name: String::new(),
            mall_group_label: "1".into(),
            mall_label: mall.into(),
        }
    }

    fn known(r: &Row, state: State, failure: Option<FailureKind>) -> Known<'_> {
        Known {
            row: r,
            state,
            failure,
        }
    }

    #[test]
    fn unknown_and_unfinished_rows_are_sent() {
        let r = row("11", "a");
        assert_eq!(sighting(None, &r, false), Sighting::Send);
        for state in [State::Pending, State::InFlight] {
            assert_eq!(
                sighting(Some(&known(&r, state, None)), &r, false),
                Sighting::Send
            );
        }
        let transient = known(&r, State::Failed, Some(FailureKind::Transient));
        assert_eq!(sighting(Some(&transient), &r, false), Sighting::Send);
    }

    #[test]
    fn a_done_row_is_never_resent_and_a_change_is_drift() {
        let stored = row("11", "a");
        for state in [State::Succeeded, State::AlreadyCircled] {
            let k = known(&stored, state, None);
            assert_eq!(sighting(Some(&k), &stored, true), Sighting::Done);
            match sighting(Some(&k), &row("12", "a"), true) {
                Sighting::Drifted(detail) => {
                    assert!(detail.contains("mall_label"), "{detail}");
                    assert!(detail.starts_with(state.as_str()), "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_permanent_failure_is_resent_only_changed_or_when_asked() {
        let stored = row("11", "a");
        let k = known(&stored, State::Failed, Some(FailureKind::Permanent));
        assert_eq!(sighting(Some(&k), &stored, false), Sighting::FailedBefore);
        assert_eq!(sighting(Some(&k), &stored, true), Sighting::Send);
        assert_eq!(sighting(Some(&k), &row("12", "a"), false), Sighting::Send);
    }

    #[test]
    fn circled_with_what_an_earlier_unknown_attempt_sent() {
        assert_eq!(
            circled_with_earlier_payload(&row("11", "a"), &row("11", "a")),
            None
        );
        let detail = circled_with_earlier_payload(&row("11", "a"), &row("12", "a")).unwrap();
        assert!(detail.contains("mall_label"), "{detail}");
    }
}
