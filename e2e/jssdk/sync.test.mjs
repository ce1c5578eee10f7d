// End-to-end test of Chappe's /sync with matrix-js-sdk, the SDK Element Web
// is built on. Two users, each a real MatrixClient running its own sync loop
// (client.startClient()) against a real server, check what a person on
// Element would see: invites, joins, messages, typing, receipts, unread
// counts, room names and leaves, all delivered through /sync.
//
// Usage: CHAPPE_BASE_URL=http://127.0.0.1:8008 node sync.test.mjs
// The server must allow open registration (m.login.dummy) and not rate limit.
// e2e/jssdk_test.go starts such a server and runs this script from go test.
//
// Environment:
//   CHAPPE_BASE_URL      the client API base URL (required)
//   JSSDK_STEP_TIMEOUT   milliseconds each step may wait for what it expects
//                        (default 10000)
//   JSSDK_VERBOSE=1      print the SDK's debug log and every HTTP exchange
//
// Each step prints "ok" or "FAIL" with what was expected and what was seen
// (including the server's non-2xx answers since the step began); the last
// line is "jssdk: N passed, N failed", and the exit status is 1 if any step
// failed or could not run. There are no mocks: the fetch passed to the SDK is
// the real one, wrapped only to record the /sync bodies and error answers so
// steps can check the wire as well as the SDK's view of it.

// Importing the harness first installs the Node 20 polyfills the SDK needs.
import { StepFailure, fail, sleep, safeJSON, short, quietSdkLogs, waitUntilWithin, baseUrlFromEnv } from "./harness.mjs";

const sdk = await import("matrix-js-sdk");
const { logger: sdkGlobalLogger } = await import("matrix-js-sdk/lib/logger.js");
const { ClientEvent, RoomEvent, RoomMemberEvent, SyncState, NotificationCountType, KnownMembership } = sdk;

const baseUrl = baseUrlFromEnv();
const STEP_TIMEOUT = Number(process.env.JSSDK_STEP_TIMEOUT ?? 10000);
const waitUntil = waitUntilWithin(STEP_TIMEOUT);
const VERBOSE = process.env.JSSDK_VERBOSE === "1";
// A hard stop, so a wedged SDK can never hang go test.
const WATCHDOG_MS = Number(process.env.JSSDK_WATCHDOG ?? 180000);

// The SDK's modules log through loglevel loggers derived from one root
// logger, each created at debug level; they copy the root's methodFactory, so
// this one keeps them to warnings and errors unless JSSDK_VERBOSE=1.
quietSdkLogs(sdkGlobalLogger, VERBOSE);

// --- helpers ----------------------------------------------------------------




// userLogger is the SDK's logger for one user: debug and info only with
// JSSDK_VERBOSE=1; warnings and errors always, prefixed with the user, but
// each distinct message only once (the SDK retries failing requests in a
// loop).
function userLogger(name, prefix = "") {
    const seen = new Set();
    const out = (level) => (...args) => {
        const line = args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safeJSON(a))).join(" ");
        if (!VERBOSE) {
            if (seen.has(line)) return;
            seen.add(line);
        }
        console.log(`    [sdk ${name}${prefix ? " " + prefix : ""} ${level}] ${line}`);
    };
    const noop = () => {};
    return {
        trace: VERBOSE ? out("trace") : noop,
        debug: VERBOSE ? out("debug") : noop,
        info: VERBOSE ? out("info") : noop,
        warn: out("warn"),
        error: out("error"),
        getChild: (p) => userLogger(name, prefix + p),
    };
}



// Wire is one user's record of the HTTP exchanges their client made: every
// /sync body in order, and every non-2xx answer.
class Wire {
    constructor(name) {
        this.name = name;
        this.syncs = [];
        this.errors = [];
        this.listeners = new Set();
    }

    fetchFn() {
        return async (resource, init = {}) => {
            const url = new URL(typeof resource === "string" ? resource : resource.url ?? String(resource));
            const method = init.method ?? "GET";
            const res = await fetch(resource, init);
            const path = url.pathname + (url.pathname.endsWith("/sync") ? `?since=${url.searchParams.get("since") ?? ""}` : "");
            if (!res.ok) {
                let body = "";
                try {
                    body = await res.clone().text();
                } catch {}
                this.errors.push({ at: Date.now(), line: `${method} ${path} → ${res.status} ${short(body, 200)}` });
                if (VERBOSE) console.log(`    [http ${this.name}] ${method} ${path} → ${res.status} ${short(body, 200)}`);
            } else if (url.pathname.endsWith("/sync")) {
                try {
                    const body = await res.clone().json();
                    this.syncs.push(body);
                    for (const l of this.listeners) l(body);
                    if (VERBOSE) console.log(`    [http ${this.name}] ${method} ${path} → 200 ${short(body, 600)}`);
                } catch (e) {
                    this.errors.push({ at: Date.now(), line: `${method} ${path} → 200 with a body that is not JSON: ${e}` });
                }
            } else if (VERBOSE) {
                console.log(`    [http ${this.name}] ${method} ${path} → ${res.status}`);
            }
            return res;
        };
    }

    mark() {
        return { syncs: this.syncs.length, errors: this.errors.length };
    }

    syncsSince(mark) {
        return this.syncs.slice(mark.syncs);
    }

    errorsSince(mark) {
        return this.errors.slice(mark.errors).map((e) => e.line);
    }
}

function roomsOf(body, kind) {
    return body?.rooms?.[kind] ?? {};
}

// --- users ------------------------------------------------------------------

const runID = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

class User {
    constructor(name) {
        this.name = name;
        this.localpart = `js_${name}_${runID}`;
        this.password = `correct horse battery ${name} ${runID}`;
        this.wire = new Wire(name);
        this.client = null;
        this.userId = null;
        this.lastSyncState = null;
        this.lastSyncError = null;
    }

    async register() {
        const anon = sdk.createClient({ baseUrl, logger: userLogger(this.name), fetchFn: this.wire.fetchFn() });
        const res = await anon.registerRequest({
            username: this.localpart,
            password: this.password,
            auth: { type: "m.login.dummy" },
            initial_device_display_name: `matrix-js-sdk e2e (${this.name})`,
        });
        if (!res?.user_id || !res?.access_token || !res?.device_id) {
            fail(`/register for ${this.localpart} answered without user_id, access_token or device_id: ${short(res)}`);
        }
        this.userId = res.user_id;
        this.client = sdk.createClient({
            baseUrl,
            userId: res.user_id,
            accessToken: res.access_token,
            deviceId: res.device_id,
            logger: userLogger(this.name),
            fetchFn: this.wire.fetchFn(),
            timelineSupport: true,
        });
        this.client.on(ClientEvent.Sync, (state, _prev, data) => {
            this.lastSyncState = state;
            if (data?.error) this.lastSyncError = data.error;
        });
    }

    room(roomId) {
        return this.client.getRoom(roomId);
    }

    membership(roomId) {
        return this.room(roomId)?.getMyMembership();
    }
}

// --- steps ------------------------------------------------------------------

const results = [];
let blockedBy = null;

// step runs fn as one numbered step. A step marked required stops the steps
// after it, which are then counted as failed (not skipped).
async function step(name, fn, { required = false, users = [] } = {}) {
    const n = results.length + 1;
    if (blockedBy) {
        results.push({ name, ok: false });
        console.log(`FAIL ${n} ${name}: not run, because step "${blockedBy}" failed`);
        return;
    }
    const marks = users.map((u) => [u, u.wire.mark()]);
    const start = Date.now();
    try {
        const note = await fn();
        results.push({ name, ok: true });
        console.log(`ok   ${n} ${name} (${Date.now() - start} ms)${note ? " — " + note : ""}`);
    } catch (e) {
        results.push({ name, ok: false });
        const msg = e instanceof StepFailure ? e.message : `${e?.name ?? "Error"}: ${e?.message ?? e}${e?.errcode ? ` (${e.errcode}, HTTP ${e.httpStatus})` : ""}`;
        console.log(`FAIL ${n} ${name} (${Date.now() - start} ms): ${msg}`);
        for (const [u, mark] of marks) {
            const errs = u.wire.errorsSince(mark);
            if (errs.length) {
                console.log(`     the server's error answers to ${u.name} during the step:`);
                for (const line of [...new Set(errs)].slice(0, 8)) console.log(`       ${line}`);
            }
        }
        if (required) blockedBy = name;
    }
}

const alice = new User("alice");
const bob = new User("bob");
const both = [alice, bob];
let roomId = null;
const sent = []; // event IDs alice sent after bob joined, for the unread count

async function waitPrepared(u) {
    await waitUntil(
        `${u.name}'s sync loop to reach PREPARED`,
        () => u.lastSyncState === SyncState.Prepared || u.lastSyncState === SyncState.Syncing,
        {
            emitters: [[u.client, ClientEvent.Sync]],
            describe: () =>
                `last sync state ${u.lastSyncState ?? "(none)"}` +
                (u.lastSyncError ? `, last error: ${u.lastSyncError.errcode ?? u.lastSyncError.name ?? ""} ${u.lastSyncError.message ?? u.lastSyncError}` : "") +
                `; /sync bodies received: ${u.wire.syncs.length}` +
                (u.wire.errors.length ? `; the server's error answers: ${[...new Set(u.wire.errors.map((e) => e.line))].slice(0, 5).join(" | ")}` : "") +
                (u.wire.errors.some((e) => /\/pushrules\/ → 404/.test(e.line))
                    ? ". matrix-js-sdk fetches GET /pushrules/ before its first /sync and retries until it succeeds, so no SDK client (nor Element) can sync before the server serves push rules"
                    : ""),
        },
    );
}

async function sendText(u, body) {
    const res = await u.client.sendMessage(roomId, { msgtype: "m.text", body });
    if (!res?.event_id) fail(`${u.name}'s send of "${body}" returned no event_id: ${short(res)}`);
    return res.event_id;
}

// seeLiveEvent waits until u's client puts the event into the room's live
// timeline through sync.
function seeLiveEvent(u, eventId, what) {
    return waitUntil(`${u.name} to see ${what} (${eventId}) on the room's live timeline`, () => {
        const ev = u.room(roomId)?.getLiveTimeline().getEvents().find((e) => e.getId() === eventId);
        return ev ?? false;
    }, { emitters: [[u.client, RoomEvent.Timeline]] });
}

function unreadTotal(u) {
    return u.room(roomId)?.getUnreadNotificationCount(NotificationCountType.Total) ?? 0;
}

// lastWireUnread is the unread_notifications of the room in the latest /sync
// body that mentions the room, or undefined.
function lastWireUnread(u) {
    for (let i = u.wire.syncs.length - 1; i >= 0; i--) {
        const jr = roomsOf(u.wire.syncs[i], "join")[roomId];
        if (jr) return jr.unread_notifications;
    }
    return undefined;
}

function wireUnreadText(u) {
    for (let i = u.wire.syncs.length - 1; i >= 0; i--) {
        const jr = roomsOf(u.wire.syncs[i], "join")[roomId];
        if (jr) return jr.unread_notifications ? short(jr.unread_notifications) : "absent (the server sent no unread_notifications)";
    }
    return "(the room was in none of the /sync bodies)";
}

const watchdog = setTimeout(() => {
    console.log(`FAIL the whole run took longer than ${WATCHDOG_MS} ms; stopping`);
    console.log(`jssdk: ${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length + 1} failed`);
    process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

console.log(`matrix-js-sdk end-to-end test against ${baseUrl} (node ${process.version}, step timeout ${STEP_TIMEOUT} ms)`);

await step("register two users with m.login.dummy (registerRequest)", async () => {
    await alice.register();
    await bob.register();
    return `${alice.userId}, ${bob.userId}`;
}, { required: true, users: both });

await step("both clients start their sync loop and reach PREPARED", async () => {
    await Promise.all(both.map((u) => u.client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false })));
    await Promise.all(both.map(waitPrepared));
    for (const u of both) {
        const first = u.wire.syncs[0];
        if (!first?.next_batch) fail(`${u.name}'s first /sync body has no next_batch: ${short(first)}`);
    }
}, { required: true, users: both });

await step("an invite appears in bob's sync (rooms.invite, membership invite, room name from invite_state)", async () => {
    const mark = bob.wire.mark();
    const res = await alice.client.createRoom({ name: "Salon JS", preset: "private_chat", invite: [bob.userId] });
    roomId = res.room_id;
    if (!roomId) fail(`createRoom returned no room_id: ${short(res)}`);
    await waitUntil(`bob's client to hold the room with membership "invite"`, () => bob.membership(roomId) === KnownMembership.Invite, {
        emitters: [[bob.client, RoomEvent.MyMembership]],
        describe: () => `bob's membership: ${bob.membership(roomId) ?? "(room unknown to bob's client)"}; /sync bodies since the invite: ${bob.wire.syncsSince(mark).length}`,
    });
    const onWire = bob.wire.syncsSince(mark).find((b) => roomsOf(b, "invite")[roomId]);
    if (!onWire) fail("bob's client knows the invite but no /sync body had it under rooms.invite");
    const stripped = roomsOf(onWire, "invite")[roomId].invite_state?.events ?? [];
    const me = stripped.find((e) => e.type === "m.room.member" && e.state_key === bob.userId);
    if (me?.content?.membership !== "invite") fail(`invite_state has no m.room.member invite for bob: ${short(stripped, 500)}`);
    if (me.sender !== alice.userId) fail(`bob's invite member event has sender ${me.sender}, want ${alice.userId}`);
    const name = bob.room(roomId).name;
    if (name !== "Salon JS") fail(`bob's client shows the invite as "${name}", want "Salon JS" (m.room.name in invite_state: ${short(stripped.find((e) => e.type === "m.room.name"))})`);
    return `invite_state types: ${stripped.map((e) => e.type).join(", ")}`;
}, { users: both });

await step("the invite disappears when bob joins (rooms.join, not rooms.invite)", async () => {
    if (!roomId) fail("no room: the invite step did not create one");
    const mark = bob.wire.mark();
    await bob.client.joinRoom(roomId);
    await waitUntil(`bob's client to show membership "join"`, () => bob.membership(roomId) === KnownMembership.Join, {
        emitters: [[bob.client, RoomEvent.MyMembership]],
        describe: () => `bob's membership: ${bob.membership(roomId) ?? "(room unknown)"}`,
    });
    const joinedBody = await waitUntil("a /sync body of bob's with the room under rooms.join", () => bob.wire.syncsSince(mark).find((b) => roomsOf(b, "join")[roomId]), {
        describe: () => `bodies since the join: ${short(bob.wire.syncsSince(mark).map((b) => Object.keys(b.rooms ?? {}).filter((k) => Object.keys(b.rooms[k]).length)), 300)}`,
    });
    if (roomsOf(joinedBody, "invite")[roomId]) fail("the /sync body that has the room under rooms.join still lists it under rooms.invite");
    const idx = bob.wire.syncs.indexOf(joinedBody);
    const later = bob.wire.syncs.slice(idx).find((b) => roomsOf(b, "invite")[roomId]);
    if (later) fail(`a /sync body after the join lists the room under rooms.invite again: ${short(roomsOf(later, "invite")[roomId])}`);
    const tl = roomsOf(joinedBody, "join")[roomId].timeline?.events ?? [];
    if (!tl.some((e) => e.type === "m.room.member" && e.state_key === bob.userId && e.content?.membership === "join")) {
        fail(`the join's /sync timeline lacks bob's join event: ${short(tl.map((e) => `${e.type}/${e.state_key ?? ""}/${e.content?.membership ?? ""}`))}`);
    }
    await waitUntil(`alice to see bob's membership as join`, () => alice.room(roomId)?.getMember(bob.userId)?.membership === KnownMembership.Join, {
        emitters: [[alice.client, RoomMemberEvent.Membership]],
        describe: () => `alice sees bob as ${alice.room(roomId)?.getMember(bob.userId)?.membership ?? "(no member)"}`,
    });
}, { required: true, users: both });

await step("live delivery: alice's message reaches bob through his sync loop", async () => {
    const body = `bonjour ${runID}`;
    const t0 = performance.now();
    const eventId = await sendText(alice, body);
    const t1 = performance.now();
    sent.push(eventId);
    const ev = await seeLiveEvent(bob, eventId, `alice's message "${body}"`);
    const t2 = performance.now();
    if (ev.getSender() !== alice.userId) fail(`bob sees the message sent by ${ev.getSender()}, want ${alice.userId}`);
    if (ev.getContent().body !== body) fail(`bob sees body ${short(ev.getContent().body)}, want "${body}"`);
    return `send took ${(t1 - t0).toFixed(1)} ms, arrival ${(t2 - t1).toFixed(1)} ms after the send returned`;
}, { users: both });

await step("typing: bob sees alice start and stop typing (RoomMember.typing)", async () => {
    const aliceTyping = () => bob.room(roomId)?.getMember(alice.userId)?.typing;
    await alice.client.sendTyping(roomId, true, 20000);
    await waitUntil("bob to see alice typing", () => aliceTyping() === true, {
        emitters: [[bob.client, RoomMemberEvent.Typing]],
        describe: () => `alice's typing flag in bob's client: ${aliceTyping()}`,
    });
    await alice.client.sendTyping(roomId, false);
    await waitUntil("bob to see alice stop typing", () => aliceTyping() === false, {
        emitters: [[bob.client, RoomMemberEvent.Typing]],
        describe: () => `alice's typing flag in bob's client: ${aliceTyping()}`,
    });
}, { users: both });

let lastUnread = null;
await step("unread count: alice's messages raise bob's notification count (unread_notifications)", async () => {
    for (const body of ["premier message non lu", "second message non lu"]) {
        const id = await sendText(alice, `${body} ${runID}`);
        sent.push(id);
        lastUnread = id;
    }
    await seeLiveEvent(bob, lastUnread, "alice's last unread message");
    // Bob has read nothing since he joined, and the default push rules
    // notify for every m.room.message: one notification per message.
    const want = sent.length;
    await waitUntil(`bob's unread notification count to be ${want}`, () => unreadTotal(bob) === want, {
        emitters: [[bob.client, RoomEvent.UnreadNotifications]],
        describe: () => `bob's client shows ${unreadTotal(bob)}; unread_notifications in bob's latest /sync for the room: ${wireUnreadText(bob)}`,
    });
    return `count ${want}`;
}, { users: both });

await step("read receipt: bob's m.read receipt reaches alice (Room.receipt)", async () => {
    if (!lastUnread) fail("no message to acknowledge: the previous step sent none");
    const ev = bob.room(roomId)?.findEventById(lastUnread);
    if (!ev) fail(`bob's client does not hold ${lastUnread}`);
    await bob.client.sendReadReceipt(ev);
    const readUpTo = () => alice.room(roomId)?.getEventReadUpTo(bob.userId);
    await waitUntil(`alice to see bob's read receipt on ${lastUnread}`, () => {
        const r = alice.room(roomId)?.getReadReceiptForUserId(bob.userId, true);
        return r?.eventId === lastUnread;
    }, {
        emitters: [[alice.client, RoomEvent.Receipt]],
        describe: () => `alice's client has bob's receipt on ${alice.room(roomId)?.getReadReceiptForUserId(bob.userId, true)?.eventId ?? "(none)"}, read up to ${readUpTo() ?? "(none)"}`,
    });
}, { users: both });

await step("unread count: bob's read receipt brings his count back to 0", async () => {
    if (!lastUnread) fail("no unread messages were sent");
    await waitUntil("bob's unread notification count to be 0 after his receipt, from the server", () => {
        const w = lastWireUnread(bob);
        return unreadTotal(bob) === 0 && w && w.notification_count === 0;
    }, {
        emitters: [[bob.client, RoomEvent.UnreadNotifications], [bob.client, ClientEvent.Sync]],
        describe: () => `bob's client shows ${unreadTotal(bob)}; unread_notifications in bob's latest /sync for the room: ${wireUnreadText(bob)}`,
    });
}, { users: both });

await step("room rename: bob sees the new name (Room.name)", async () => {
    const name = `Salon renommé ${runID}`;
    await alice.client.setRoomName(roomId, name);
    await waitUntil(`bob's room name to become "${name}"`, () => bob.room(roomId)?.name === name, {
        emitters: [[bob.client, RoomEvent.Name]],
        describe: () => `bob's client shows "${bob.room(roomId)?.name}"`,
    });
}, { users: both });

await step("leave: bob's leave appears in his sync under rooms.leave, and alice sees it", async () => {
    const mark = bob.wire.mark();
    await bob.client.leave(roomId);
    await waitUntil(`bob's client to show membership "leave"`, () => bob.membership(roomId) === KnownMembership.Leave, {
        emitters: [[bob.client, RoomEvent.MyMembership]],
        describe: () => `bob's membership: ${bob.membership(roomId) ?? "(room unknown)"}; /sync bodies since the leave: ${short(bob.wire.syncsSince(mark).map((b) => b.rooms), 400)}`,
    });
    const body = bob.wire.syncsSince(mark).find((b) => roomsOf(b, "leave")[roomId]);
    if (!body) fail("bob's client shows the leave but no /sync body had the room under rooms.leave");
    if (roomsOf(body, "join")[roomId]) fail("the /sync body with the room under rooms.leave also lists it under rooms.join");
    const tl = roomsOf(body, "leave")[roomId].timeline?.events ?? [];
    if (!tl.some((e) => e.type === "m.room.member" && e.state_key === bob.userId && e.content?.membership === "leave")) {
        fail(`rooms.leave's timeline lacks bob's leave event: ${short(tl.map((e) => `${e.type}/${e.state_key ?? ""}/${e.content?.membership ?? ""}`))}`);
    }
    await waitUntil(`alice to see bob's membership as leave`, () => alice.room(roomId)?.getMember(bob.userId)?.membership === KnownMembership.Leave, {
        emitters: [[alice.client, RoomMemberEvent.Membership]],
        describe: () => `alice sees bob as ${alice.room(roomId)?.getMember(bob.userId)?.membership ?? "(no member)"}`,
    });
}, { users: both });

for (const u of both) u.client?.stopClient();
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
console.log(`jssdk: ${passed} passed, ${failed} failed`);
// Exit explicitly: timers the SDK leaves behind must not keep node alive.
process.exit(failed === 0 ? 0 : 1);
