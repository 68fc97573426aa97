//! Moderation: deleting, reporting, timeouts and bans, and the audit log
//! that records every such action for the caller to persist.

use serde::Serialize;

use super::{Actor, MemberId, Output, Refusal, Room, Sanction, Target, moderator, notice, send};
use crate::protocol::{ChatMessage, ErrorCode, Role, ServerFrame};

/// A report of a message, for the moderators' queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// When, ms since the Unix epoch.
    pub ts: u64,
    /// The reporting user.
    pub reporter: String,
    /// The reported message, as it was when reported.
    pub message: ChatMessage,
    /// Why.
    pub reason: Option<String>,
}

/// One moderation action, for the caller to persist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// When, ms since the Unix epoch.
    pub ts: u64,
    /// The acting user.
    pub actor: String,
    /// The actor's role.
    pub actor_role: Role,
    /// What was done.
    pub action: AuditAction,
    /// The user acted upon (a deleted message's author, when known).
    pub target: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

/// The kinds of [`AuditEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditAction {
    /// A message was deleted (by a moderator, or by its author).
    Delete {
        /// The message id.
        message: u64,
    },
    /// A user was timed out.
    Timeout {
        /// For how long.
        seconds: u64,
    },
    /// A user was banned.
    Ban,
    /// A ban or timeout was lifted.
    Unban,
    /// The history was cleared.
    Clear,
    /// Slow mode was set.
    SlowMode {
        /// Seconds, 0 = off.
        seconds: u64,
    },
    /// Registered-only mode was set.
    RegisteredOnly {
        /// On or off.
        on: bool,
    },
}

impl Room {
    pub(super) fn delete(
        &mut self,
        actor: &Actor,
        id: u64,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let privileged = actor.info.role.is_privileged();
        let target = match self.recent.iter().position(|m| m.id == id) {
            Some(i) => {
                if !privileged && self.recent[i].user != actor.user {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "you can delete only your own messages",
                    ));
                }
                self.recent.remove(i).map(|m| m.user)
            }
            // Older than what the room keeps: a moderator may still delete
            // it from clients' scrollback and the database.
            None if privileged && id != 0 && id < self.next_message_id => None,
            None => {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no message {id}"),
                ));
            }
        };
        self.log(
            actor,
            AuditAction::Delete { message: id },
            target,
            None,
            now,
        );
        out.push(send(Target::All, &ServerFrame::Deleted { id }));
        Ok(())
    }

    pub(super) fn report(
        &mut self,
        actor: &Actor,
        id: u64,
        reason: Option<String>,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        self.check_sanction(&actor.user, now)?;
        let message = self
            .recent
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no message {id}")))?;
        if !actor.info.role.is_privileged() {
            let limit = self.config.rate_limit;
            self.users
                .entry(actor.user.clone())
                .or_default()
                .rate(limit, now)?;
        }
        self.reports.push(Report {
            ts: now,
            reporter: actor.user.clone(),
            message,
            reason,
        });
        out.push(notice(
            actor.member,
            "thanks, the moderators will look at it".into(),
        ));
        Ok(())
    }

    pub(super) fn sanction(
        &mut self,
        actor: &Actor,
        user: String,
        sanction: Sanction,
        reason: Option<String>,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        moderator(actor)?;
        if user == actor.user {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "you cannot sanction yourself",
            ));
        }
        // Only an admin may sanction someone who moderates this room.
        let protected = self
            .members
            .values()
            .any(|m| m.info.user.as_deref() == Some(user.as_str()) && m.info.role.is_privileged());
        if protected && actor.info.role != Role::Admin {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "moderators can only be sanctioned by an admin",
            ));
        }
        let (action, what) = match sanction {
            Sanction::Banned => (AuditAction::Ban, "banned".to_owned()),
            Sanction::TimedOut { until } => {
                let seconds = until.saturating_sub(now) / 1000;
                (
                    AuditAction::Timeout { seconds },
                    format!("timed out for {seconds} s"),
                )
            }
        };
        self.sanctions.insert(user.clone(), sanction);
        let told = match &reason {
            Some(reason) => format!("you have been {what}: {reason}"),
            None => format!("you have been {what}"),
        };
        for id in self.members_of(&user) {
            out.push(notice(id, told.clone()));
        }
        out.push(notice(actor.member, format!("{user} has been {what}")));
        self.log(actor, action, Some(user), reason, now);
        Ok(())
    }

    pub(super) fn unban(
        &mut self,
        actor: &Actor,
        user: String,
        now: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        moderator(actor)?;
        if self.sanctions.remove(&user).is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{user} is not banned or timed out"),
            ));
        }
        for id in self.members_of(&user) {
            out.push(notice(id, "you can chat again".into()));
        }
        out.push(notice(actor.member, format!("{user} can chat again")));
        self.log(actor, AuditAction::Unban, Some(user), None, now);
        Ok(())
    }

    pub(super) fn check_sanction(&mut self, user: &str, now: u64) -> Result<(), Refusal> {
        match self.sanctions.get(user) {
            None => Ok(()),
            Some(Sanction::Banned) => Err(Refusal::new(
                ErrorCode::Banned,
                "you are banned from this chat",
            )),
            Some(&Sanction::TimedOut { until }) if now < until => {
                Err(Refusal::new(ErrorCode::TimedOut, "you are timed out")
                    .retry_after_ms(until - now))
            }
            Some(Sanction::TimedOut { .. }) => {
                self.sanctions.remove(user);
                Ok(())
            }
        }
    }

    pub(super) fn log(
        &mut self,
        actor: &Actor,
        action: AuditAction,
        target: Option<String>,
        reason: Option<String>,
        now: u64,
    ) {
        self.audit.push(AuditEntry {
            ts: now,
            actor: actor.user.clone(),
            actor_role: actor.info.role,
            action,
            target,
            reason,
        });
    }

    pub(super) fn members_of(&self, user: &str) -> Vec<MemberId> {
        let mut ids: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.info.user.as_deref() == Some(user))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}
