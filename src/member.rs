//! Tracking members: `code_owner:{oldrev}:{newrev}`, `reset_approvals:...`,
//! or `code_owner:create` for a create-flow sync without revs.

use crate::error::{Error, Result};

/// The two kinds of work the tracking knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deleting and recreating code-owner rules.
    CodeOwner,
    /// Resetting approvals after a push.
    ResetApprovals,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::CodeOwner => "code_owner",
            Kind::ResetApprovals => "reset_approvals",
        }
    }
}

/// A checked member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    kind: Kind,
    revs: Option<(String, String)>,
}

impl Member {
    /// A member for a push range, or the create member when both revs are absent.
    pub fn new(kind: Kind, oldrev: Option<&str>, newrev: Option<&str>) -> Result<Member> {
        let revs = match (oldrev, newrev) {
            (None, None) => None,
            (Some(old), Some(new)) => Some((check_rev("oldrev", old)?, check_rev("newrev", new)?)),
            _ => {
                return Err(Error::InvalidArgument(
                    "oldrev and newrev must be given together, or neither".into(),
                ))
            }
        };
        Ok(Member { kind, revs })
    }

    /// Parses the seed's textual form, as `ApprovalState` takes it.
    pub fn parse(text: &str) -> Result<Member> {
        let bad = || {
            Error::InvalidArgument(format!(
                "member must look like code_owner:OLDREV:NEWREV, \
                 reset_approvals:OLDREV:NEWREV or code_owner:create, got {:?}",
                truncate(text)
            ))
        };
        let mut parts = text.split(':');
        let kind = match parts.next() {
            Some("code_owner") => Kind::CodeOwner,
            Some("reset_approvals") => Kind::ResetApprovals,
            _ => return Err(bad()),
        };
        match (parts.next(), parts.next(), parts.next()) {
            (Some("create"), None, None) => Member::new(kind, None, None),
            (Some(old), Some(new), None) => Member::new(kind, Some(old), Some(new)),
            _ => Err(bad()),
        }
    }

    /// Which kind of work this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The revs, when this is not the create member.
    pub fn revs(&self) -> Option<(&str, &str)> {
        self.revs.as_ref().map(|(o, n)| (o.as_str(), n.as_str()))
    }

    /// The text stored in Redis.
    pub fn text(&self) -> String {
        match &self.revs {
            Some((old, new)) => format!("{}:{old}:{new}", self.kind.prefix()),
            None => format!("{}:create", self.kind.prefix()),
        }
    }
}

/// A git object id: 7 to 64 lowercase or uppercase hex digits. Anything else
/// (empty, `:`, `{`, NUL, `|`) could corrupt a member or an entry.
pub fn check_rev(name: &str, rev: &str) -> Result<String> {
    let ok = (7..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "{name} must be a git SHA of 7 to 64 hex digits, got {:?}",
            truncate(rev)
        )));
    }
    Ok(rev.to_string())
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaa1110000000000000000000000000000000000";
    const B: &str = "bbb2220000000000000000000000000000000000";

    #[test]
    fn round_trips_the_seed_forms() {
        for text in [
            format!("code_owner:{A}:{B}"),
            format!("reset_approvals:{A}:{B}"),
        ] {
            assert_eq!(Member::parse(&text).unwrap().text(), text);
        }
        assert_eq!(
            Member::parse("code_owner:create").unwrap().text(),
            "code_owner:create"
        );
    }

    #[test]
    fn rejects_what_could_corrupt_a_key() {
        let bad = [
            String::new(),
            "code_owner".into(),
            format!("code_owner:{A}"),
            format!("code_owner:{A}:{B}:x"),
            format!("other:{A}:{B}"),
            format!("code_owner:{A}:{{}}"),
            format!("code_owner:{A}:bbb\0222"),
            format!("code_owner:{A}:bbb|222xx"),
            format!("code_owner:{A}:{}", "b".repeat(65)),
            "code_owner::".into(),
        ];
        for text in bad {
            assert!(
                matches!(Member::parse(&text), Err(Error::InvalidArgument(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn revs_come_in_pairs() {
        assert!(Member::new(Kind::CodeOwner, Some(A), None).is_err());
        assert!(Member::new(Kind::CodeOwner, None, Some(B)).is_err());
    }
}
