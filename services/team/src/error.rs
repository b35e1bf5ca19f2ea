//! team's errors: the precise [`TeamError`] its stores return, the catalogue of codes it
//! answers with ([`TeamCode`]), and how one becomes the other.

use hopsbridge_platform::db::DbError;
use hopsbridge_platform::http::{ApiError, ErrorCode, PlatformCode};

hopsbridge_platform::error_codes! {
    /// Every code team answers with, besides the platform's own ([`PlatformCode`]:
    /// `unauthenticated`, `invalid_body`, `invalid_path`, `database_unavailable`, ...).
    pub enum TeamCode {
        /// The caller is a member of a team; only owners manage a team (decided from team's
        /// own memberships, not from the gateway's roles).
        OwnerOnly = (FORBIDDEN, "owner_only", "only a team's owner may do this, and team members may not"),
        /// An internal route called by anyone but the identity service signing as itself.
        IdentityOnly = (FORBIDDEN, "identity_only", "only the identity service may call this route"),
        /// The address to invite is not of the form `local@domain`.
        InvalidEmail = (BAD_REQUEST, "invalid_email", "the email address is not valid"),
        /// The project role is neither `Data owner` nor `Data scientist`.
        InvalidProjectRole = (BAD_REQUEST, "invalid_project_role", "the project role must be \"Data owner\" or \"Data scientist\""),
        /// The owner invited their own address.
        CannotInviteSelf = (BAD_REQUEST, "cannot_invite_self", "you cannot invite yourself"),
        /// The address belongs to a current member of the owner's own team.
        AlreadyMember = (CONFLICT, "already_member", "this person is already a member of your team"),
        /// The address belongs to a current member of another owner's team.
        MemberOfAnotherTeam = (CONFLICT, "member_of_another_team", "this person is a member of another team"),
        /// No pending invitation has this token (or id): unknown, accepted, cancelled or
        /// replaced by a newer one.
        InvitationNotFound = (NOT_FOUND, "invitation_not_found", "no such invitation, or it was used, cancelled or replaced"),
        /// The invitation's link expired; the owner can resend it.
        InvitationExpired = (GONE, "invitation_expired", "the invitation has expired, and its owner can send it again"),
        /// The signed-in person's email is not the invited address.
        EmailMismatch = (FORBIDDEN, "email_mismatch", "the invitation was sent to another email address"),
        /// The caller is already a member of a team (also a second tab accepting the same
        /// invitation).
        AlreadyInTeam = (CONFLICT, "already_in_team", "you are already a member of a team"),
        /// The caller has members of their own and cannot join another team.
        OwnerHasMembers = (CONFLICT, "owner_has_members", "you have team members of your own and must remove them before joining another team"),
        /// The caller is the owner who sent the invitation.
        CannotJoinOwnTeam = (CONFLICT, "cannot_join_own_team", "you cannot join your own team"),
        /// The terms were not accepted, or not in their current version.
        TermsNotAccepted = (BAD_REQUEST, "terms_not_accepted", "accept the current terms to join the team"),
        /// No current member of the owner's team has this user id.
        MemberNotFound = (NOT_FOUND, "member_not_found", "no such member of your team"),
        /// The caller is no member of any team.
        NotAMember = (NOT_FOUND, "not_a_member", "you are not a member of a team"),
    }
}

/// What a team operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    /// The request is refused; the code says why and how it is answered.
    #[error("refused: {}", .0.description())]
    Refused(TeamCode),
    /// A mail did not render, or the token could not be drawn (a bug or a broken host).
    #[error("{0}")]
    Internal(String),
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<TeamCode> for TeamError {
    fn from(code: TeamCode) -> Self {
        Self::Refused(code)
    }
}

impl From<diesel::result::Error> for TeamError {
    fn from(e: diesel::result::Error) -> Self {
        match DbError::from(e) {
            // Two accepts of one person racing past the locks would meet here.
            DbError::UniqueViolation { constraint } if constraint == "memberships_one_current" => {
                Self::Refused(TeamCode::AlreadyInTeam)
            }
            other => Self::Db(other),
        }
    }
}

impl hopsbridge_platform::db::RetryableError for TeamError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::Refused(code) => code.error(),
            TeamError::Db(DbError::Unavailable(_)) => PlatformCode::DatabaseUnavailable.error(),
            TeamError::Db(e) => Self::internal(e),
            TeamError::Internal(e) => Self::internal(anyhow::anyhow!(e)),
        }
    }
}

/// The description of an error response in the OpenAPI document: each code it may carry, with
/// its description (`code: description; …`).
pub(crate) fn answers(team: &[TeamCode], platform: &[PlatformCode]) -> String {
    let team = team.iter().map(|c| (c.code(), c.description()));
    let platform = platform.iter().map(|c| (c.code(), c.description()));
    team.chain(platform).map(|(code, description)| format!("{code}: {description}")).collect::<Vec<_>>().join("; ")
}
