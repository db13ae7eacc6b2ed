//! The signaling server's metrics: who is connected, who is in which room,
//! who was turned away and why, and how much is relayed.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::{Metrics, MetricsError, Refresh};

/// Why the server turned a client away (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The room has its capacity.
    Full,
    /// A room token was wrong or missing.
    Token,
    /// A join without a usable room name.
    BadJoin,
    /// A page outside `allowed-origins`.
    Origin,
    /// The address has its `max-connections-per-address`.
    TooManyConnections,
    /// Over `max-messages-per-second`: disconnected.
    Flooding,
}

impl Refused {
    const ALL: [Refused; 6] = [
        Refused::Full,
        Refused::Token,
        Refused::BadJoin,
        Refused::Origin,
        Refused::TooManyConnections,
        Refused::Flooding,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::Full => "full",
            Refused::Token => "token",
            Refused::BadJoin => "bad_join",
            Refused::Origin => "origin",
            Refused::TooManyConnections => "too_many_connections",
            Refused::Flooding => "flooding",
        }
    }
}

/// How many are in the rooms now, read from the server's own state at
/// each scrape.
pub trait Occupancy: Send + Sync {
    /// (rooms with a member, members including those whose place is held).
    fn occupancy(&self) -> (usize, usize);
}

pub struct ServerMetrics {
    joins: IntCounter,
    refusals: IntCounterVec,
    relayed: IntCounter,
    connections: IntGauge,
    rooms: IntGauge,
    members: IntGauge,
    devices_offline: IntCounter,
    occupancy: std::sync::OnceLock<Arc<dyn Occupancy>>,
}

impl ServerMetrics {
    pub fn register(metrics: &Metrics) -> Result<Arc<ServerMetrics>, MetricsError> {
        let m = metrics;
        let refusals = m.register(IntCounterVec::new(
            Opts::new("roomcam_server_refusals_total", "Joins and connections the server refused, by reason."),
            &["reason"],
        )?)?;
        // Every reason from the start, so a rate() over a fresh server is 0, not absent.
        for reason in Refused::ALL {
            refusals.with_label_values(&[reason.label()]);
        }
        let server = Arc::new(ServerMetrics {
            joins: m.register(IntCounter::new("roomcam_server_joins_total", "Joins admitted to a room.")?)?,
            refusals,
            relayed: m.register(IntCounter::new(
                "roomcam_server_messages_relayed_total",
                "Signaling messages relayed between members of a room.",
            )?)?,
            connections: m.register(IntGauge::new("roomcam_server_connections", "socket.io connections now.")?)?,
            rooms: m.register(IntGauge::new("roomcam_server_rooms", "Rooms with at least one member now.")?)?,
            members: m.register(IntGauge::new(
                "roomcam_server_members",
                "Members in rooms now, with those whose place is held for a rejoin.",
            )?)?,
            devices_offline: m.register(IntCounter::new(
                "roomcam_server_devices_offline_total",
                "Times a room's device went away while viewers could be told.",
            )?)?,
            occupancy: std::sync::OnceLock::new(),
        });
        m.add_refresh(Arc::clone(&server) as Arc<dyn Refresh>);
        Ok(server)
    }

    pub fn watch_rooms(&self, occupancy: Arc<dyn Occupancy>) {
        let _ = self.occupancy.set(occupancy);
    }

    pub fn joined(&self) {
        self.joins.inc();
    }

    pub fn refused(&self, why: Refused) {
        self.refusals.with_label_values(&[why.label()]).inc();
    }

    pub fn relayed(&self) {
        self.relayed.inc();
    }

    pub fn connected(&self) {
        self.connections.inc();
    }

    pub fn disconnected(&self) {
        self.connections.dec();
    }

    pub fn device_offline(&self) {
        self.devices_offline.inc();
    }
}

impl Refresh for ServerMetrics {
    fn refresh(&self) {
        if let Some(occupancy) = self.occupancy.get() {
            let (rooms, members) = occupancy.occupancy();
            self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
            self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two;
    impl Occupancy for Two {
        fn occupancy(&self) -> (usize, usize) {
            (2, 5)
        }
    }

    #[test]
    fn every_refusal_reason_is_there_from_the_start() {
        let metrics = Metrics::new();
        let server = ServerMetrics::register(&metrics).unwrap();
        server.watch_rooms(Arc::new(Two));
        server.refused(Refused::Full);
        let text = metrics.render().unwrap();
        assert!(text.contains("roomcam_server_refusals_total{reason=\"full\"} 1"), "{text}");
        assert!(text.contains("roomcam_server_refusals_total{reason=\"flooding\"} 0"), "{text}");
        assert!(text.contains("roomcam_server_rooms 2"), "{text}");
        assert!(text.contains("roomcam_server_members 5"), "{text}");
    }
}
