//! WHEP (draft-ietf-wish-whep) on roomcam's server: `POST /whep/ROOM` with
//! an SDP offer makes the caller a viewer of the room's device, so players
//! that know no socket.io (go2rtc, OBS, Home Assistant cards, mediamtx)
//! watch the camera.
//!
//! The server stands in for the viewer in the room: it adds a member
//! (`whep-…`) that counts against the room's capacity, relays the offer to
//! the device, and answers the HTTP request with the device's answer, which
//! carries every device candidate (the device gathers before answering a
//! WHEP member, as nothing could trickle them). The player's own candidates
//! may come later by `PATCH` (trickle-ice-sdpfrag); ICE restarts are not
//! offered (405: POST again). `DELETE` on the session ends it; so does the
//! device, when the call fails (a `bye` message to the member).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use log::{info, warn};
use serde_json::{Value, json};

use super::{Hub, Member, Rooms, bearer, remove_member};
use crate::metrics::server::{Refused, ServerMetrics};
use crate::peer::SdpKind;
use crate::signaling::limits::tokens_match;
use crate::signaling::protocol::{self, SignalData};
use crate::util::lock_ignoring_poison;

/// How long a POST waits for the device's answer (it gathers for up to 3 s).
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// What a full room tells a player to wait before it tries again.
const RETRY_AFTER_SECONDS: u32 = 10;
const SDP: &str = "application/sdp";

/// The HTTP side of one WHEP viewer, held by its member in the room.
#[derive(Default)]
pub(super) struct WhepSession {
    answer: Mutex<Option<tokio::sync::oneshot::Sender<String>>>,
}

/// What a message relayed to a WHEP member means for its session.
pub(super) enum Delivered {
    Kept,
    /// The device closed the call (or offered again, which a WHEP player
    /// cannot take): the member goes.
    Ended,
}

impl WhepSession {
    pub(super) fn deliver(&self, data: &Value) -> Delivered {
        match SignalData::from_json(data) {
            Ok(SignalData::Description { kind: SdpKind::Answer, sdp }) => {
                if let Some(waiting) = lock_ignoring_poison(&self.answer).take() {
                    let _ = waiting.send(sdp);
                }
                Delivered::Kept
            }
            // Its candidates are in the answer already.
            Ok(SignalData::Candidate(_)) => Delivered::Kept,
            Ok(SignalData::Bye | SignalData::Description { kind: SdpKind::Offer, .. }) => Delivered::Ended,
            Err(_) => Delivered::Kept,
        }
    }
}

fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    // Any origin: a player's page is rarely on the server's origin, and the
    // room's token (a Bearer header, never a cookie) is what admits it.
    set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    set(headers, header::ACCESS_CONTROL_ALLOW_METHODS, "POST, PATCH, DELETE, OPTIONS");
    set(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type, If-Match");
    set(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location, Link, ETag, Retry-After");
    // Private Network Access: a player on a public page may reach a camera's
    // server on the LAN (Chromium asks in the preflight).
    set(headers, HeaderName::from_static("access-control-allow-private-network"), "true");
    response
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    let mut text = why.into();
    text.push('\n');
    cors((status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// The CORS preflight of any WHEP request.
pub(super) async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

/// The member id of the room's device while it is connected.
fn connected_device(rooms: &Rooms, room: &str) -> Option<String> {
    rooms.devices.get(room).filter(|d| d.offline_since.is_none() && rooms.connected(room, &d.id)).map(|d| d.id.clone())
}

fn session_url(room: &str, id: &str) -> String {
    let room: String = url::form_urlencoded::byte_serialize(room.as_bytes()).collect();
    format!("/whep/{room}/{id}")
}

impl Hub {
    /// The room's token, if it has one, against the request's Bearer token;
    /// a wrong one costs its address like a wrong `join` token.
    async fn whep_authorised(&self, room: &str, parts: &axum::http::request::Parts) -> Result<(), Response> {
        let Some(secret) = self.policy.token(room) else { return Ok(()) };
        let address = super::client_address(&self.limits, parts);
        tokio::time::sleep(self.limits.token_delay(address)).await;
        if tokens_match(bearer(&parts.headers), secret) {
            return Ok(());
        }
        let failures = self.limits.token_failed(address);
        warn!("server: room {room}: WHEP from {address} refused (bad or missing token, {failures} lately from there)");
        self.count(|m| m.refused(Refused::Token));
        let mut response = refuse(StatusCode::UNAUTHORIZED, format!("room {room} needs its token as a Bearer token"));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(response)
    }
}

/// `POST /whep/ROOM`: the player's offer in, the device's answer out.
pub(super) async fn offer(hub: Arc<Hub>, room: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(why) = hub.limits.room_names.check(&room) {
        return refuse(StatusCode::BAD_REQUEST, format!("bad room name: {why}"));
    }
    if let Err(refused) = hub.whep_authorised(&room, &parts).await {
        return refused;
    }
    let is_sdp = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP)));
    if !is_sdp {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("the offer must be sent as {SDP}"));
    }
    let limit = hub.limits.max_message_bytes;
    let sdp = match axum::body::to_bytes(body, limit).await.map(|b| String::from_utf8(b.to_vec())) {
        Ok(Ok(sdp)) => sdp,
        Ok(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text"),
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("the offer is over {limit} bytes")),
    };
    if let Err(e) = crate::peer::connection::parse_remote_description(SdpKind::Offer, sdp.clone()) {
        return refuse(StatusCode::BAD_REQUEST, format!("not a usable SDP offer: {e}"));
    }

    let id = format!("{}-{:032x}", protocol::WHEP_MEMBER_PREFIX, rand::random::<u128>());
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
    let session = Arc::new(WhepSession { answer: Mutex::new(Some(answer_tx)) });
    {
        let mut rooms = lock_ignoring_poison(&hub.rooms);
        let Some(device) = connected_device(&rooms, &room) else {
            return refuse(StatusCode::NOT_FOUND, format!("no camera is connected in room {room}"));
        };
        let capacity = hub.policy.capacity(&room);
        rooms.next_epoch += 1;
        let epoch = rooms.next_epoch;
        let members = rooms.members.entry(room.clone()).or_default();
        if members.len() >= capacity {
            info!("server: room {room}: full, a WHEP viewer refused");
            hub.count(|m| m.refused(Refused::Full));
            let mut response =
                refuse(StatusCode::SERVICE_UNAVAILABLE, format!("room {room} is full ({capacity} members)"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            return response;
        }
        members.push(Member { id: id.clone(), socket: None, epoch, whep: Some(Arc::clone(&session)) });
        let count = members.len();
        let offer = SignalData::Description { kind: SdpKind::Offer, sdp }.to_json();
        if let Some(device) = members.iter().find(|m| m.id == device) {
            device.emit("message", &(room.as_str(), offer, id.as_str()));
        }
        info!("server: room {room}: {id} joined over WHEP ({count} member(s))");
        hub.count(ServerMetrics::joined);
    }
    match tokio::time::timeout(ANSWER_WAIT, answer_rx).await {
        Ok(Ok(answer)) => {
            let location = session_url(&room, &id);
            let mut response = (StatusCode::CREATED, [(header::CONTENT_TYPE, SDP)], answer).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            cors(response)
        }
        _ => {
            end(&hub, &room, &id, "the camera did not answer its offer");
            refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the camera in room {room} did not answer within {}s", ANSWER_WAIT.as_secs()),
            )
        }
    }
}

/// Removes a WHEP member (the device hears `bye` and closes its peer).
fn end(hub: &Hub, room: &str, id: &str, why: &str) -> bool {
    let mut rooms = lock_ignoring_poison(&hub.rooms);
    let known = rooms.members.get(room).is_some_and(|ms| ms.iter().any(|m| m.id == id && m.whep.is_some()));
    if known {
        remove_member(&mut rooms, room, id, why);
    }
    known
}

/// `DELETE /whep/ROOM/ID`: the player is done.
pub(super) async fn delete(hub: Arc<Hub>, room: String, id: String) -> Response {
    match protocol::is_whep_member(&id) && end(&hub, &room, &id, "its WHEP session was deleted") {
        true => cors(StatusCode::OK.into_response()),
        false => refuse(StatusCode::NOT_FOUND, format!("no WHEP session {id} in room {room}")),
    }
}

/// `PATCH /whep/ROOM/ID` (trickle-ice-sdpfrag): the player's late
/// candidates, relayed to the device. An ICE restart is not offered.
pub(super) async fn patch(hub: Arc<Hub>, room: String, id: String, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get(header::IF_MATCH).is_some_and(|v| v.as_bytes() == b"*") {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "ICE restarts are not supported: POST a new offer");
    }
    let fragment = String::from_utf8_lossy(&body);
    let mut mid: Option<String> = None;
    let mut candidates = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(candidate) = line.strip_prefix("a=candidate:") {
            candidates.push(json!({
                "type": "candidate",
                "label": 0,
                "id": mid.clone().unwrap_or_else(|| "0".to_owned()),
                "candidate": format!("candidate:{candidate}"),
            }));
        }
    }
    let rooms = lock_ignoring_poison(&hub.rooms);
    let members = rooms.members.get(&room).map(Vec::as_slice).unwrap_or_default();
    if !members.iter().any(|m| m.id == id && m.whep.is_some()) {
        return refuse(StatusCode::NOT_FOUND, format!("no WHEP session {id} in room {room}"));
    }
    let device = connected_device(&rooms, &room);
    if let Some(device) = members.iter().find(|m| Some(&m.id) == device.as_ref()) {
        for candidate in candidates {
            device.emit("message", &(room.as_str(), candidate, id.as_str()));
            hub.count(ServerMetrics::relayed);
        }
    }
    cors(StatusCode::NO_CONTENT.into_response())
}

/// The WHEP routes, for the server's router.
pub(super) fn routes(hub: Arc<Hub>) -> axum::Router {
    use axum::routing::{delete as delete_route, post};
    let (offer_hub, delete_hub, patch_hub) = (hub.clone(), hub.clone(), hub);
    axum::Router::new()
        .route(
            "/whep/{room}",
            post(move |Path(room): Path<String>, request: Request| offer(offer_hub.clone(), room, request))
                .options(preflight)
                .patch(|| async { refuse(StatusCode::METHOD_NOT_ALLOWED, "PATCH the session's Location") }),
        )
        .route(
            "/whep/{room}/{id}",
            delete_route(move |Path((room, id)): Path<(String, String)>| delete(delete_hub.clone(), room, id))
                .patch(move |Path((room, id)): Path<(String, String)>, headers: HeaderMap, body: Bytes| {
                    patch(patch_hub.clone(), room, id, headers, body)
                })
                .options(preflight),
        )
        .method_not_allowed_fallback(|method: Method| async move {
            refuse(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not a WHEP request"))
        })
}

/// The WHEP members of a room (a device that comes back as a new process
/// has none of their peers: they go).
pub(super) fn members_of(members: &HashMap<String, Vec<Member>>, room: &str) -> Vec<String> {
    members
        .get(room)
        .map(|ms| ms.iter().filter(|m| m.whep.is_some()).map(|m| m.id.clone()).collect())
        .unwrap_or_default()
}
