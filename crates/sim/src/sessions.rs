//! Live sessions and their `faceswap_status`, derived from time so no background task is needed:
//! 1 until the queue delay has passed, then 2 (or 4 for a session drawn to fail), 3 once closed.
//! A session that failed stays 4 after its close.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faceswap_wire::{FaceswapStatus, LiveSession, Resource, SourceImage};
use rand::Rng;

/// Why a session call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No session has this id.
    #[error("session not found")]
    NotFound,
    /// The session was closed already.
    #[error("session is already closed")]
    Closed,
    /// The session failed; it can only be closed.
    #[error("session has failed; close it")]
    Failed,
    /// The account has as many open sessions as its quota allows.
    #[error("insufficient quota: {open} sessions open, the account allows {max}")]
    QuotaExceeded {
        /// Sessions open now.
        open: u64,
        /// The quota.
        max: u64,
    },
}

/// The Agora parameters the front end joins the channel with.
#[derive(Debug, Clone)]
struct Agora {
    channel_id: String,
    front_user_id: String,
    front_rtc_token: String,
    algorithm_user_id: String,
}

/// One live session.
#[derive(Debug, Clone)]
pub struct Session {
    id: String,
    created_at: u64,
    ready_at: Instant,
    fails: bool,
    failed_at: Option<Instant>,
    closed_at: Option<u64>,
    closed_instant: Option<Instant>,
    source_image: Vec<SourceImage>,
    agora: Agora,
    resources: Vec<Resource>,
}

impl Session {
    /// The status at `now`.
    pub fn status(&self, now: Instant) -> FaceswapStatus {
        // A session drawn to fail fails when its queue ends, unless it was closed before that.
        let end = self.closed_instant.map_or(now, |closed| closed.min(now));
        let failed_by_draw = self.fails && end >= self.ready_at;
        if self.failed_at.is_some_and(|t| now >= t) || failed_by_draw {
            FaceswapStatus::Failed
        } else if self.closed_at.is_some() {
            FaceswapStatus::Success
        } else if now >= self.ready_at {
            FaceswapStatus::Processing
        } else {
            FaceswapStatus::Queuing
        }
    }

    /// Whether the session still holds upstream resources.
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    /// The session as the API shows it.
    pub fn to_wire(&self, now: Instant, app_id: &str) -> LiveSession {
        LiveSession {
            id: self.id.clone(),
            faceswap_status: self.status(now),
            channel_id: self.agora.channel_id.clone(),
            front_user_id: self.agora.front_user_id.clone(),
            front_rtc_token: self.agora.front_rtc_token.clone(),
            algorithm_user_id: self.agora.algorithm_user_id.clone(),
            app_id: app_id.to_owned(),
            source_image: self.source_image.clone(),
            created_at: self.created_at as i64,
            closed_at: self.closed_at.map(|t| t as i64),
            resources: self.resources.clone(),
        }
    }

    /// Attaches the resources minted at close.
    pub fn set_resources(&mut self, resources: Vec<Resource>) {
        self.resources = resources;
    }
}

/// Everything a new session is created with.
pub struct NewSession {
    /// The faces to swap in.
    pub source_image: Vec<SourceImage>,
    /// How long it queues.
    pub queue_delay: Duration,
    /// Whether it will fail instead of processing.
    pub fails: bool,
    /// The account quota of open sessions.
    pub max_open: u64,
    /// Wall-clock creation time, seconds since the epoch.
    pub created_at: u64,
}

/// All sessions of the account.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<String, Session>,
    open: u64,
    app_id: String,
}

impl Sessions {
    /// An empty store whose sessions join the Agora app `app_id`.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            map: HashMap::new(),
            open: 0,
            app_id: app_id.into(),
        }
    }

    /// The Agora app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Creates a session unless the quota is spent.
    pub fn create(&mut self, new: NewSession, now: Instant) -> Result<&Session, SessionError> {
        if self.open >= new.max_open {
            return Err(SessionError::QuotaExceeded {
                open: self.open,
                max: new.max_open,
            });
        }
        let mut rng = rand::rng();
        let id = hex_id(&mut rng);
        let token_tail: String = (&mut rng)
            .sample_iter(rand::distr::Alphanumeric)
            .take(96)
            .map(char::from)
            .collect();
        let session = Session {
            agora: Agora {
                channel_id: format!("fs_{id}"),
                front_user_id: rng.random_range(100_000..1_000_000u32).to_string(),
                front_rtc_token: format!("006{}{}", self.app_id, token_tail),
                algorithm_user_id: rng.random_range(1_000_000..10_000_000u32).to_string(),
            },
            id: id.clone(),
            created_at: new.created_at,
            ready_at: now + new.queue_delay,
            fails: new.fails,
            failed_at: None,
            closed_at: None,
            closed_instant: None,
            source_image: new.source_image,
            resources: Vec::new(),
        };
        self.open += 1;
        Ok(self.map.entry(id).or_insert(session))
    }

    /// Replaces the faces of an open, healthy session.
    pub fn update(
        &mut self,
        id: &str,
        source_image: Vec<SourceImage>,
        now: Instant,
    ) -> Result<&Session, SessionError> {
        let session = self.map.get_mut(id).ok_or(SessionError::NotFound)?;
        if !session.is_open() {
            return Err(SessionError::Closed);
        }
        if session.status(now) == FaceswapStatus::Failed {
            return Err(SessionError::Failed);
        }
        session.source_image = source_image;
        Ok(session)
    }

    /// Closes an open session, releasing its quota slot.
    pub fn close(
        &mut self,
        id: &str,
        closed_at: u64,
        now: Instant,
    ) -> Result<&mut Session, SessionError> {
        let session = self.map.get_mut(id).ok_or(SessionError::NotFound)?;
        if !session.is_open() {
            return Err(SessionError::Closed);
        }
        session.closed_at = Some(closed_at);
        session.closed_instant = Some(now);
        self.open -= 1;
        Ok(session)
    }

    /// Marks an open session failed from `now` on (fault injection).
    pub fn fail(&mut self, id: &str, now: Instant) -> Result<(), SessionError> {
        let session = self.map.get_mut(id).ok_or(SessionError::NotFound)?;
        if !session.is_open() {
            return Err(SessionError::Closed);
        }
        session.failed_at = Some(now);
        Ok(())
    }

    /// A session by id.
    pub fn get(&self, id: &str) -> Option<&Session> {
        self.map.get(id)
    }

    /// Ids of the sessions open now, oldest first.
    pub fn open_ids(&self) -> Vec<String> {
        let mut open: Vec<&Session> = self.map.values().filter(|s| s.is_open()).collect();
        open.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        open.into_iter().map(|s| s.id.clone()).collect()
    }

    /// Forgets sessions closed before `cutoff` (seconds since the epoch) to bound memory.
    pub fn prune_closed_before(&mut self, cutoff: u64) {
        self.map
            .retain(|_, s| s.closed_at.is_none_or(|closed| closed >= cutoff));
    }
}

/// A 24-hex-digit id, the shape of the provider's ids.
pub fn hex_id(rng: &mut impl Rng) -> String {
    let bytes: [u8; 12] = rng.random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(max_open: u64, fails: bool) -> NewSession {
        NewSession {
            source_image: vec![SourceImage {
                path: "http://x/a.jpg".into(),
                opts: "1,1:2,2:3,3:4,4".into(),
            }],
            queue_delay: Duration::from_millis(500),
            fails,
            max_open,
            created_at: 1,
        }
    }

    #[test]
    fn a_session_queues_then_processes_then_succeeds_on_close() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let id = s.create(new(10, false), t0).unwrap().id.clone();
        let get = |s: &Sessions, t| s.get(&id).unwrap().status(t);
        assert_eq!(get(&s, t0), FaceswapStatus::Queuing);
        assert_eq!(
            get(&s, t0 + Duration::from_millis(499)),
            FaceswapStatus::Queuing
        );
        assert_eq!(
            get(&s, t0 + Duration::from_millis(500)),
            FaceswapStatus::Processing
        );
        s.close(&id, 2, t0).unwrap();
        assert_eq!(
            get(&s, t0 + Duration::from_secs(1)),
            FaceswapStatus::Success
        );
    }

    #[test]
    fn a_session_drawn_to_fail_turns_failed_after_the_queue_and_stays_failed() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let id = s.create(new(10, true), t0).unwrap().id.clone();
        assert_eq!(s.get(&id).unwrap().status(t0), FaceswapStatus::Queuing);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.get(&id).unwrap().status(later), FaceswapStatus::Failed);
        assert_eq!(
            s.update(&id, vec![], later).unwrap_err(),
            SessionError::Failed
        );
        s.close(&id, 2, later).unwrap();
        assert_eq!(s.get(&id).unwrap().status(later), FaceswapStatus::Failed);
    }

    #[test]
    fn a_session_drawn_to_fail_but_closed_while_queuing_succeeds() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let id = s.create(new(10, true), t0).unwrap().id.clone();
        s.close(&id, 2, t0).unwrap();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.get(&id).unwrap().status(later), FaceswapStatus::Success);
    }

    #[test]
    fn an_injected_failure_turns_an_open_session_failed_at_once() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let id = s.create(new(10, false), t0).unwrap().id.clone();
        s.fail(&id, t0).unwrap();
        assert_eq!(s.get(&id).unwrap().status(t0), FaceswapStatus::Failed);
        s.close(&id, 2, t0).unwrap();
        assert_eq!(s.get(&id).unwrap().status(t0), FaceswapStatus::Failed);
        assert_eq!(s.fail(&id, t0).unwrap_err(), SessionError::Closed);
    }

    #[test]
    fn the_quota_counts_open_sessions_and_a_close_frees_a_slot() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let a = s.create(new(2, false), t0).unwrap().id.clone();
        s.create(new(2, false), t0).unwrap();
        assert_eq!(
            s.create(new(2, false), t0).unwrap_err(),
            SessionError::QuotaExceeded { open: 2, max: 2 }
        );
        s.close(&a, 2, t0).unwrap();
        assert!(s.create(new(2, false), t0).is_ok());
        assert_eq!(s.open_ids().len(), 2);
    }

    #[test]
    fn closing_twice_or_an_unknown_id_is_refused() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let id = s.create(new(2, false), t0).unwrap().id.clone();
        s.close(&id, 2, t0).unwrap();
        assert_eq!(s.close(&id, 3, t0).unwrap_err(), SessionError::Closed);
        assert_eq!(s.close("nope", 3, t0).unwrap_err(), SessionError::NotFound);
        assert_eq!(s.update(&id, vec![], t0).unwrap_err(), SessionError::Closed);
    }

    #[test]
    fn pruning_forgets_only_sessions_closed_before_the_cutoff() {
        let mut s = Sessions::new("app");
        let t0 = Instant::now();
        let old = s.create(new(9, false), t0).unwrap().id.clone();
        let recent = s.create(new(9, false), t0).unwrap().id.clone();
        let open = s.create(new(9, false), t0).unwrap().id.clone();
        s.close(&old, 10, t0).unwrap();
        s.close(&recent, 100, t0).unwrap();
        s.prune_closed_before(50);
        assert!(s.get(&old).is_none());
        assert!(s.get(&recent).is_some());
        assert!(s.get(&open).is_some());
    }

    #[test]
    fn ids_look_like_the_providers() {
        let id = hex_id(&mut rand::rng());
        assert_eq!(id.len(), 24);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
