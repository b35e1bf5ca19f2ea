//! Inviting and joining: what an owner does with invitations (invite, list, resend, cancel),
//! what anyone sees of one by its link (the preview), and accepting one. Each runs in the
//! caller's transaction; the mail and the event it causes are written in the same one.

use crate::error::{TeamCode, TeamError};
use crate::invitations::{self, Invitation, NewInvitation};
use crate::mail::InvitationMail;
use crate::memberships::{self, Joining, Membership, lock_people};
use crate::people;
use crate::states::InvitationStatus;
use crate::token::{self, Token};
use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use hopsbridge_domain::{Email, ProjectRole, UserId};
use hopsbridge_platform::clock::Clock;
use hopsbridge_platform::mail::{self, Links, MailTemplate as _};
use serde::Serialize;
use uuid::Uuid;

/// What inviting needs from the settings.
#[derive(Clone, Debug)]
pub struct Rules {
    /// How long a link works after each send.
    pub ttl: TimeDelta,
    /// The terms version a join must accept.
    pub terms_version: String,
    /// Links into the console.
    pub links: Links,
    /// Calendar time (to the microsecond Postgres keeps, so what is stored and what is
    /// announced agree): when links expire, when people join.
    pub clock: Clock,
}

/// An invitation with the link that carries its token: answered once, to the invitation and to
/// each resend, since only the token's hash is kept.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Issued {
    /// The invitation.
    pub invitation: Invitation,
    /// The link the mail carries, `<public base URL>/invitations/<token>`.
    pub link: String,
}

/// An invitation as anyone holding its link sees it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Who invited.
    pub invited_by: Inviter,
    /// The invited address.
    pub email: Email,
    /// The project role offered.
    pub project_role: ProjectRole,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// The version of the terms to accept when joining.
    pub terms_version: String,
}

/// The inviting owner.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Inviter {
    /// Their name, or their address when they have none.
    pub name: String,
    /// Their address.
    pub email: Option<Email>,
}

/// Refuses a caller who is a member of a team: only owners manage one.
///
/// # Errors
/// [`TeamCode::OwnerOnly`].
pub async fn require_owner(conn: &mut AsyncPgConnection, me: UserId) -> Result<(), TeamError> {
    match memberships::current_of(conn, me).await? {
        Some(_) => Err(TeamCode::OwnerOnly.into()),
        None => Ok(()),
    }
}

/// `me` (whose address is `my_email`) invites `email` with `role`: refused for oneself, a
/// member of one's own team and a member of another; a pending invitation of theirs to the same
/// address is replaced. The mail is written with it.
///
/// # Errors
/// [`TeamCode::OwnerOnly`], [`TeamCode::CannotInviteSelf`], [`TeamCode::AlreadyMember`],
/// [`TeamCode::MemberOfAnotherTeam`].
pub async fn invite(
    conn: &mut AsyncPgConnection,
    rules: &Rules,
    me: UserId,
    my_email: &Email,
    email: &Email,
    role: ProjectRole,
) -> Result<Issued, TeamError> {
    lock_people(conn, &[me]).await?;
    require_owner(conn, me).await?;
    people::ensure(conn, me, my_email).await?;
    if email == my_email {
        return Err(TeamCode::CannotInviteSelf.into());
    }
    for person in people::with_email(conn, email).await? {
        if person == me {
            return Err(TeamCode::CannotInviteSelf.into());
        }
        if let Some(m) = memberships::current_of(conn, person).await? {
            let code =
                if m.owner_user_id == me.as_owner() { TeamCode::AlreadyMember } else { TeamCode::MemberOfAnotherTeam };
            return Err(code.into());
        }
    }
    let now = rules.clock.now();
    invitations::close_pending(conn, me.as_owner(), Some(email), InvitationStatus::Replaced, now).await?;
    let token = draw()?;
    let new =
        NewInvitation { owner: me.as_owner(), email, role, token_hash: &token.hash, now, expires_at: now + rules.ttl };
    let invitation = invitations::insert(conn, &new).await?;
    send(conn, rules, invitation, &token).await
}

/// The pending invitations of `me`, expired ones included.
///
/// # Errors
/// [`TeamCode::OwnerOnly`].
pub async fn pending(conn: &mut AsyncPgConnection, me: UserId) -> Result<Vec<Invitation>, TeamError> {
    require_owner(conn, me).await?;
    invitations::pending_of(conn, me.as_owner()).await
}

/// Sends pending invitation `id` of `me` again with a new token and a new expiry; its old link
/// stops working.
///
/// # Errors
/// [`TeamCode::OwnerOnly`], [`TeamCode::InvitationNotFound`].
pub async fn resend(conn: &mut AsyncPgConnection, rules: &Rules, me: UserId, id: Uuid) -> Result<Issued, TeamError> {
    lock_people(conn, &[me]).await?;
    require_owner(conn, me).await?;
    let Some(invitation) = invitations::pending_for_update(conn, me.as_owner(), id).await? else {
        return Err(TeamCode::InvitationNotFound.into());
    };
    let token = draw()?;
    let now = rules.clock.now();
    let invitation = invitations::reissue(conn, invitation.id, &token.hash, now, now + rules.ttl).await?;
    send(conn, rules, invitation, &token).await
}

/// Cancels pending invitation `id` of `me` at calendar time `now`; its link stops working.
///
/// # Errors
/// [`TeamCode::OwnerOnly`], [`TeamCode::InvitationNotFound`].
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    me: UserId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Invitation, TeamError> {
    lock_people(conn, &[me]).await?;
    require_owner(conn, me).await?;
    let Some(invitation) = invitations::pending_for_update(conn, me.as_owner(), id).await? else {
        return Err(TeamCode::InvitationNotFound.into());
    };
    invitations::close(conn, invitation.id, InvitationStatus::Cancelled, None, now).await
}

/// What the link `token` shows: who invited, whom, for which role, until when.
///
/// # Errors
/// [`TeamCode::InvitationNotFound`] (unknown, used, cancelled, replaced),
/// [`TeamCode::InvitationExpired`].
pub async fn preview(conn: &mut AsyncPgConnection, rules: &Rules, token: &str) -> Result<Preview, TeamError> {
    let hash = token::parse(token).ok_or(TeamCode::InvitationNotFound)?;
    let (invitation, _) = invitations::by_token(conn, &hash, false).await?.ok_or(TeamCode::InvitationNotFound)?;
    if invitation.status != InvitationStatus::Pending {
        return Err(TeamCode::InvitationNotFound.into());
    }
    if invitation.is_expired(rules.clock.now()) {
        return Err(TeamCode::InvitationExpired.into());
    }
    let inviter = people::find(conn, invitation.owner_user_id.as_user()).await?;
    Ok(Preview {
        invited_by: Inviter {
            name: inviter.as_ref().map_or_else(|| invitation.owner_user_id.to_string(), people::Person::display_name),
            email: inviter.and_then(|p| p.email),
        },
        email: invitation.email,
        project_role: invitation.project_role,
        expires_at: invitation.expires_at,
        terms_version: rules.terms_version.clone(),
    })
}

/// What a person accepting an invitation says about the terms.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    /// Must be true.
    pub accept_terms: bool,
    /// The version of the terms accepted: the current one (the preview names it).
    pub terms_version: String,
}

/// `me` (signed in with `my_email`) accepts the invitation of the link `token`: claimed under
/// its row lock and both people's locks, so two tabs make one member and one event.
///
/// # Errors
/// [`TeamCode::InvitationNotFound`], [`TeamCode::InvitationExpired`], [`TeamCode::EmailMismatch`],
/// [`TeamCode::CannotJoinOwnTeam`], [`TeamCode::AlreadyInTeam`], [`TeamCode::OwnerHasMembers`],
/// [`TeamCode::TermsNotAccepted`].
pub async fn accept(
    conn: &mut AsyncPgConnection,
    rules: &Rules,
    me: UserId,
    my_email: Option<&Email>,
    token: &str,
    acceptance: &Acceptance,
) -> Result<Membership, TeamError> {
    let hash = token::parse(token).ok_or(TeamCode::InvitationNotFound)?;
    let (seen, _) = invitations::by_token(conn, &hash, false).await?.ok_or(TeamCode::InvitationNotFound)?;
    let owner = seen.owner_user_id;
    lock_people(conn, &[owner.as_user(), me]).await?;
    let (invitation, accepted_by) =
        invitations::by_token(conn, &hash, true).await?.ok_or(TeamCode::InvitationNotFound)?;
    match invitation.status {
        InvitationStatus::Pending => {}
        // The other tab won: this one is answered as a member already.
        InvitationStatus::Accepted if accepted_by == Some(me) => return Err(TeamCode::AlreadyInTeam.into()),
        _ => return Err(TeamCode::InvitationNotFound.into()),
    }
    let now = rules.clock.now();
    if invitation.is_expired(now) {
        return Err(TeamCode::InvitationExpired.into());
    }
    let Some(my_email) = my_email.filter(|e| **e == invitation.email) else {
        return Err(TeamCode::EmailMismatch.into());
    };
    if owner == me.as_owner() {
        return Err(TeamCode::CannotJoinOwnTeam.into());
    }
    if memberships::current_of(conn, me).await?.is_some() {
        return Err(TeamCode::AlreadyInTeam.into());
    }
    if memberships::count_of(conn, me.as_owner()).await? > 0 {
        return Err(TeamCode::OwnerHasMembers.into());
    }
    if memberships::current_of(conn, owner.as_user()).await?.is_some() {
        // The owner joined a team since, which cancels their invitations; this one was read
        // before that committed.
        return Err(TeamCode::InvitationNotFound.into());
    }
    if !acceptance.accept_terms || acceptance.terms_version != rules.terms_version {
        return Err(TeamCode::TermsNotAccepted.into());
    }
    people::ensure(conn, me, my_email).await?;
    let joining = Joining {
        owner,
        member: me,
        role: invitation.project_role,
        invitation: invitation.id,
        terms_version: &rules.terms_version,
        at: now,
    };
    let membership = memberships::join(conn, &joining).await?;
    invitations::close(conn, invitation.id, InvitationStatus::Accepted, Some(me), now).await?;
    // A member manages no team: their own pending invitations go.
    invitations::close_pending(conn, me.as_owner(), None, InvitationStatus::Cancelled, now).await?;
    Ok(membership)
}

fn draw() -> Result<Token, TeamError> {
    Token::generate().map_err(|e| TeamError::Internal(format!("the OS random generator failed: {e}")))
}

/// Writes the invitation's mail for its current send, with the link carrying `token`.
async fn send(
    conn: &mut AsyncPgConnection,
    rules: &Rules,
    invitation: Invitation,
    token: &Token,
) -> Result<Issued, TeamError> {
    let owner = people::find(conn, invitation.owner_user_id.as_user()).await?;
    let inviter_email = owner.as_ref().and_then(|p| p.email.as_ref()).map(ToString::to_string).unwrap_or_default();
    let link = rules.links.to(&["invitations", &token.text], &[]).to_string();
    let rendered = InvitationMail {
        inviter: owner.as_ref().map_or_else(|| inviter_email.clone(), people::Person::display_name),
        inviter_email,
        role: invitation.project_role,
        link: link.clone(),
        expires_at: invitation.expires_at,
    }
    .render()
    .map_err(|e| TeamError::Internal(format!("invitation mail: {e}")))?;
    let key = InvitationMail::dedup_key(invitation.id, invitation.sends);
    mail::enqueue(conn, &key, &invitation.email, &rendered).await?;
    Ok(Issued { invitation, link })
}
