//! Why a line is rejected, and the record of a rejected event: the vocabulary the parser, the run, the rejects
//! file and the report share.
//!
//! Why this module exists: the reject reasons are a contract with everyone who reads the rejects file or the
//! report (their names are fixed, their order is the precedence: where several apply, the first wins). They are
//! defined once, at the bottom, so that the layers that count them need not reach into the parser.

use std::fmt;

/// Why a line was rejected, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    LineTooLong,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    InvalidBatch,
    MissingType,
    DuplicateKey,
    MissingGroupId,
    InvalidGroupId,
    InvalidUserId,
    InvalidAnonymousId,
    MissingIdentity,
    MissingTime,
    DuplicateMessageId,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::LineTooLong,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::InvalidBatch,
        Reason::MissingType,
        Reason::DuplicateKey,
        Reason::MissingGroupId,
        Reason::InvalidGroupId,
        Reason::InvalidUserId,
        Reason::InvalidAnonymousId,
        Reason::MissingIdentity,
        Reason::MissingTime,
        Reason::DuplicateMessageId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LineTooLong => "line_too_long",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::InvalidBatch => "invalid_batch",
            Reason::MissingType => "missing_type",
            Reason::DuplicateKey => "duplicate_key",
            Reason::MissingGroupId => "missing_group_id",
            Reason::InvalidGroupId => "invalid_group_id",
            Reason::InvalidUserId => "invalid_user_id",
            Reason::InvalidAnonymousId => "invalid_anonymous_id",
            Reason::MissingIdentity => "missing_identity",
            Reason::MissingTime => "missing_time",
            Reason::DuplicateMessageId => "duplicate_message_id",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: its reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: Reason,
    pub message: String,
    /// For `duplicate_message_id`: the messageId (the rejects file then records it instead of the raw line).
    pub id: Option<String>,
}

impl Reject {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Reject {
            reason,
            message: message.into(),
            id: None,
        }
    }

    /// An event whose messageId is already loaded.
    pub fn duplicate(id: &str, message: String) -> Self {
        Reject {
            reason: Reason::DuplicateMessageId,
            message,
            id: Some(id.to_string()),
        }
    }
}
