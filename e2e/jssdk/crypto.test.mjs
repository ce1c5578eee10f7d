// End-to-end encryption with matrix-js-sdk and its Rust crypto
// (initRustCrypto: matrix-sdk-crypto compiled to WebAssembly), the stack
// Element Web runs, against a real Chappe server. Two users, each a
// MatrixClient with its own sync loop and an in-memory crypto store, share a
// room with m.room.encryption; the SDK uploads device and one-time keys,
// tracks device lists, claims keys, sends Megolm room keys in Olm-encrypted
// to-device messages and decrypts: alice's message must reach bob as
// plaintext in his client and only as m.room.encrypted on the wire, and the
// other way round; a device bob adds later reads what is sent after it
// appeared.
//
// Usage: CHAPPE_BASE_URL=http://127.0.0.1:8008 node crypto.test.mjs
// The server must allow open registration (m.login.dummy) and not rate limit.
// e2e/jssdk_crypto_test.go starts such a server and runs this script from
// go test.
//
// Environment:
//   CHAPPE_BASE_URL      the client API base URL (required)
//   JSSDK_STEP_TIMEOUT   milliseconds each step may wait for what it expects
//                        (default 20000)
//   JSSDK_VERBOSE=1      print the SDK's debug log and every HTTP exchange
//
// Each step prints "ok" or "FAIL" with what was expected and what was seen
// (including the server's non-2xx answers since the step began); the last
// line is "jssdk crypto: N passed, N failed", and the exit status is 1 if any
// step failed or could not run. No mocks: the fetch given to the SDK is the
// real one, wrapped only to record /sync bodies and error answers.

// Importing the harness first installs the Node 20 polyfills the SDK needs.
import { StepFailure, fail, sleep, safeJSON, short, quietSdkLogs, waitUntilWithin, baseUrlFromEnv } from "./harness.mjs";

const sdk = await import("matrix-js-sdk");
const { logger: sdkGlobalLogger } = await import("matrix-js-sdk/lib/logger.js");
const { ClientEvent, RoomEvent, MatrixEventEvent, SyncState, KnownMembership } = sdk;

const baseUrl = baseUrlFromEnv();
const STEP_TIMEOUT = Number(process.env.JSSDK_STEP_TIMEOUT ?? 20000);
const waitUntil = waitUntilWithin(STEP_TIMEOUT);
const VERBOSE = process.env.JSSDK_VERBOSE === "1";
const WATCHDOG_MS = Number(process.env.JSSDK_WATCHDOG ?? 180000);

// Keep the SDK's loggers (the Rust crypto's included) to warnings and errors
// unless JSSDK_VERBOSE=1.
quietSdkLogs(sdkGlobalLogger, VERBOSE);

// --- helpers ----------------------------------------------------------------





// deviceLogger is the SDK's logger for one device: warnings and errors (each
// distinct one once), and debug and info with JSSDK_VERBOSE=1.
function deviceLogger(name, prefix = "") {
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
        getChild: (p) => deviceLogger(name, prefix + p),
    };
}

// Wire records one device's HTTP exchanges: /sync bodies, the paths of
// successful requests, and every non-2xx answer.
class Wire {
    constructor(name) {
        this.name = name;
        this.syncs = [];
        this.errors = [];
        this.calls = [];
    }

    fetchFn() {
        return async (resource, init = {}) => {
            const url = new URL(typeof resource === "string" ? resource : (resource.url ?? String(resource)));
            const method = init.method ?? "GET";
            const res = await fetch(resource, init);
            const path = url.pathname.replace(/^\/_matrix\/client\/v3/, "");
            if (!res.ok) {
                let body = "";
                try {
                    body = await res.clone().text();
                } catch {}
                this.errors.push(`${method} ${path} → ${res.status} ${short(body, 200)}`);
                if (VERBOSE) console.log(`    [http ${this.name}] ${method} ${path} → ${res.status} ${short(body, 200)}`);
                return res;
            }
            this.calls.push(`${method} ${path}`);
            if (url.pathname.endsWith("/sync")) {
                try {
                    this.syncs.push(await res.clone().json());
                } catch (e) {
                    this.errors.push(`${method} ${path} → 200 with a body that is not JSON: ${e}`);
                }
            }
            if (VERBOSE) console.log(`    [http ${this.name}] ${method} ${path} → ${res.status}`);
            return res;
        };
    }

    mark() {
        return { syncs: this.syncs.length, errors: this.errors.length, calls: this.calls.length };
    }

    syncsSince(mark) {
        return this.syncs.slice(mark.syncs);
    }

    errorsSince(mark) {
        return this.errors.slice(mark.errors);
    }

    called(what) {
        return this.calls.some((c) => c.startsWith(what));
    }
}

// --- devices ----------------------------------------------------------------

const runID = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

class Device {
    constructor(name, user) {
        this.name = name;
        this.user = user;
        this.wire = new Wire(name);
        this.client = null;
        this.lastSyncState = null;
        this.lastSyncError = null;
    }

    // start creates the client for the credentials, initialises the Rust
    // crypto with an in-memory store (no IndexedDB in Node) and starts the
    // sync loop.
    async start(creds) {
        this.client = sdk.createClient({
            baseUrl,
            userId: creds.user_id,
            accessToken: creds.access_token,
            deviceId: creds.device_id,
            logger: deviceLogger(this.name),
            fetchFn: this.wire.fetchFn(),
            timelineSupport: true,
        });
        this.client.on(ClientEvent.Sync, (state, _prev, data) => {
            this.lastSyncState = state;
            if (data?.error) this.lastSyncError = data.error;
        });
        await this.client.initRustCrypto({ useIndexedDB: false });
        await this.client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
        await waitUntil(`${this.name}'s sync loop to reach PREPARED`, () => this.lastSyncState === SyncState.Prepared || this.lastSyncState === SyncState.Syncing, {
            emitters: [[this.client, ClientEvent.Sync]],
            describe: () =>
                `last sync state ${this.lastSyncState ?? "(none)"}` +
                (this.lastSyncError ? `, last error: ${this.lastSyncError.errcode ?? this.lastSyncError.name ?? ""} ${this.lastSyncError.message ?? this.lastSyncError}` : "") +
                (this.wire.errors.length ? `; the server's error answers: ${[...new Set(this.wire.errors)].slice(0, 5).join(" | ")}` : ""),
        });
    }

    get crypto() {
        return this.client.getCrypto();
    }

    get deviceId() {
        return this.client.getDeviceId();
    }

    room(roomId) {
        return this.client.getRoom(roomId);
    }

    stop() {
        this.client?.stopClient();
    }
}

class User {
    constructor(name) {
        this.name = name;
        this.localpart = `js_${name}_${runID}`;
        this.password = `correct horse battery ${name} ${runID}`;
        this.userId = null;
    }

    // register creates the account and its first device.
    async register(device) {
        const anon = sdk.createClient({ baseUrl, logger: deviceLogger(device.name), fetchFn: device.wire.fetchFn() });
        const res = await anon.registerRequest({
            username: this.localpart,
            password: this.password,
            auth: { type: "m.login.dummy" },
            initial_device_display_name: `matrix-js-sdk crypto e2e (${device.name})`,
        });
        if (!res?.user_id || !res?.access_token || !res?.device_id) {
            fail(`/register for ${this.localpart} answered without user_id, access_token or device_id: ${short(res)}`);
        }
        this.userId = res.user_id;
        await device.start(res);
    }

    // login adds a device with the password.
    async login(device) {
        const anon = sdk.createClient({ baseUrl, logger: deviceLogger(device.name), fetchFn: device.wire.fetchFn() });
        const res = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: this.userId },
            password: this.password,
            initial_device_display_name: `matrix-js-sdk crypto e2e (${device.name})`,
        });
        if (!res?.access_token || !res?.device_id) fail(`/login for ${this.userId} answered without access_token or device_id: ${short(res)}`);
        await device.start(res);
    }
}

// --- steps ------------------------------------------------------------------

const results = [];
let blockedBy = null;

// step runs fn as one numbered step. A required step that fails stops the
// steps after it, which are then counted as failed (not skipped).
async function step(name, fn, { required = false, devices = [] } = {}) {
    const n = results.length + 1;
    if (blockedBy) {
        results.push({ name, ok: false });
        console.log(`FAIL ${n} ${name}: not run, because step "${blockedBy}" failed`);
        return;
    }
    const marks = devices.map((d) => [d, d.wire.mark()]);
    const start = Date.now();
    try {
        const note = await fn();
        results.push({ name, ok: true });
        console.log(`ok   ${n} ${name} (${Date.now() - start} ms)${note ? " — " + note : ""}`);
    } catch (e) {
        results.push({ name, ok: false });
        const msg = e instanceof StepFailure ? e.message : `${e?.name ?? "Error"}: ${e?.message ?? e}${e?.errcode ? ` (${e.errcode}, HTTP ${e.httpStatus})` : ""}`;
        console.log(`FAIL ${n} ${name} (${Date.now() - start} ms): ${msg}`);
        for (const [d, mark] of marks) {
            const errs = d.wire.errorsSince(mark);
            if (errs.length) {
                console.log(`     the server's error answers to ${d.name} during the step:`);
                for (const line of [...new Set(errs)].slice(0, 8)) console.log(`       ${line}`);
            }
        }
        if (required) blockedBy = name;
    }
}

// syncedEvent is the raw event with this ID from the device's /sync bodies.
function syncedEvent(d, roomId, eventId) {
    for (const body of d.wire.syncs) {
        const ev = (body?.rooms?.join?.[roomId]?.timeline?.events ?? []).find((e) => e.event_id === eventId);
        if (ev) return ev;
    }
    return null;
}

// waitDecrypted waits until the device's client holds the event decrypted
// into the m.room.message it was, and checks it came encrypted on the wire.
async function waitDecrypted(d, roomId, eventId, sender, body) {
    const find = () => d.room(roomId)?.findEventById(eventId);
    const ev = await waitUntil(
        `${d.name} to decrypt ${eventId}`,
        () => {
            const ev = find();
            return ev && !ev.isBeingDecrypted() && !ev.isDecryptionFailure() && ev.getType() === "m.room.message" ? ev : false;
        },
        {
            emitters: [[d.client, MatrixEventEvent.Decrypted], [d.client, RoomEvent.Timeline]],
            describe: () => {
                const ev = find();
                if (!ev) return `${d.name}'s client does not hold the event (it has not come down /sync)`;
                const toDevice = d.wire.syncs.flatMap((b) => b?.to_device?.events ?? []).map((e) => e.type);
                return (
                    `${d.name} holds it as ${ev.getType()}` +
                    (ev.isDecryptionFailure() ? `, decryption failed: ${ev.decryptionFailureReason}` : "") +
                    `; to-device event types ${d.name} got: ${short(toDevice)}`
                );
            },
        },
    );
    if (ev.getSender() !== sender) fail(`${d.name} sees ${eventId} sent by ${ev.getSender()}, want ${sender}`);
    if (!ev.isEncrypted()) fail(`${d.name}'s client does not consider ${eventId} encrypted`);
    if (ev.getContent().body !== body) fail(`${d.name} decrypts ${eventId} to body ${short(ev.getContent().body)}, want "${body}"`);
    const raw = syncedEvent(d, roomId, eventId);
    if (!raw) fail(`${d.name} decrypted ${eventId} but no /sync body of its own had it in the room's timeline`);
    if (raw.type !== "m.room.encrypted" || raw.content?.algorithm !== "m.megolm.v1.aes-sha2" || safeJSON(raw).includes(body)) {
        fail(`on the wire, ${eventId} is ${short(raw, 400)}: want m.room.encrypted with m.megolm.v1.aes-sha2 and no plaintext`);
    }
    return ev;
}

const watchdog = setTimeout(() => {
    console.log(`FAIL the whole run took longer than ${WATCHDOG_MS} ms; stopping`);
    console.log(`jssdk crypto: ${results.filter((r) => r.ok).length} passed, ${results.filter((r) => !r.ok).length + 1} failed`);
    process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

console.log(`matrix-js-sdk Rust crypto end-to-end test against ${baseUrl} (node ${process.version}, step timeout ${STEP_TIMEOUT} ms)`);

const alice = new User("alice");
const bob = new User("bob");
const a1 = new Device("alice-1", alice);
const b1 = new Device("bob-1", bob);
const b2 = new Device("bob-2", bob);
const all = [a1, b1, b2];
let roomId = null;

await step("register two users; each client initialises the Rust crypto (in-memory store) and syncs", async () => {
    await alice.register(a1);
    await bob.register(b1);
    for (const d of [a1, b1]) {
        if (!d.crypto) fail(`${d.name} has no crypto API after initRustCrypto`);
    }
    const v = a1.crypto.getVersion();
    return `${alice.userId}, ${bob.userId}; ${v}`;
}, { required: true, devices: all });

await step("each client uploads its device keys and one-time keys, and /keys/query shows the other's device", async () => {
    for (const [d, other] of [[a1, b1], [b1, a1]]) {
        const map = await waitUntil(`${d.name} to see ${other.name}'s device through /keys/query`, async () => {
            const m = await d.crypto.getUserDeviceInfo([other.user.userId], true);
            return m.get(other.user.userId)?.get(other.deviceId) ? m : false;
        }, {
            ms: STEP_TIMEOUT,
            describe: () => `${other.name} called: ${short(other.wire.calls.filter((c) => c.includes("/keys/")))}; errors: ${short([...new Set(other.wire.errors)])}`,
        });
        const dev = map.get(other.user.userId).get(other.deviceId);
        if (!dev.getIdentityKey() || !dev.getFingerprint()) fail(`${d.name} got ${other.name}'s device without curve25519/ed25519 keys: ${short(dev)}`);
    }
    for (const d of [a1, b1]) {
        // The Rust crypto uploads one-time keys and a fallback key; /sync
        // reports them (device_one_time_keys_count,
        // device_unused_fallback_key_types).
        await waitUntil(`${d.name}'s /sync to count its signed_curve25519 one-time keys and list its unused fallback key`, () =>
            d.wire.syncs.some((b) => b.device_one_time_keys_count?.signed_curve25519 > 0) &&
            d.wire.syncs.some((b) => (b.device_unused_fallback_key_types ?? []).includes("signed_curve25519")), {
            describe: () =>
                `device_one_time_keys_count in ${d.name}'s /sync bodies: ${short(d.wire.syncs.map((b) => b.device_one_time_keys_count))}; ` +
                `device_unused_fallback_key_types: ${short(d.wire.syncs.map((b) => b.device_unused_fallback_key_types))}`,
        });
    }
}, { required: true, devices: all });

await step("alice creates a room with m.room.encryption (Megolm); bob joins; both clients see it encrypted", async () => {
    const res = await a1.client.createRoom({
        name: "Salon chiffré",
        preset: "private_chat",
        invite: [bob.userId],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    roomId = res.room_id;
    if (!roomId) fail(`createRoom returned no room_id: ${short(res)}`);
    await waitUntil("bob's client to hold the invite", () => b1.room(roomId)?.getMyMembership() === KnownMembership.Invite, {
        emitters: [[b1.client, RoomEvent.MyMembership]],
        describe: () => `bob's membership: ${b1.room(roomId)?.getMyMembership() ?? "(room unknown)"}`,
    });
    await b1.client.joinRoom(roomId);
    await waitUntil("alice to see bob joined", () => a1.room(roomId)?.getMember(bob.userId)?.membership === KnownMembership.Join, {
        describe: () => `alice sees bob as ${a1.room(roomId)?.getMember(bob.userId)?.membership ?? "(no member)"}`,
    });
    for (const d of [a1, b1]) {
        await waitUntil(`${d.name} to consider the room encrypted`, () => d.crypto.isEncryptionEnabledInRoom(roomId), {
            describe: () => `${d.name}'s room state has m.room.encryption: ${short(d.room(roomId)?.currentState.getStateEvents("m.room.encryption", "")?.getContent())}`,
        });
    }
}, { required: true, devices: all });

await step("alice's message: the SDK encrypts it (keys/claim, Olm to-device m.room_key) and bob's client decrypts it", async () => {
    const body = `Message chiffré d'alice ${runID}`;
    const mark = b1.wire.mark();
    const res = await a1.client.sendMessage(roomId, { msgtype: "m.text", body });
    if (!res?.event_id) fail(`sendMessage returned no event_id: ${short(res)}`);
    for (const call of ["POST /keys/claim", "PUT /sendToDevice/m.room.encrypted"]) {
        if (!a1.wire.called(call)) fail(`alice's client never made a successful ${call} (errors: ${short([...new Set(a1.wire.errors)])})`);
    }
    await waitDecrypted(b1, roomId, res.event_id, alice.userId, body);
    const toDevice = b1.wire.syncsSince(mark).flatMap((b) => b?.to_device?.events ?? []);
    const olm = toDevice.find((e) => e.type === "m.room.encrypted" && e.sender === alice.userId);
    if (!olm || olm.content?.algorithm !== "m.olm.v1.curve25519-aes-sha2") {
        fail(`bob's /sync to_device had no Olm-encrypted event from alice: ${short(toDevice, 500)}`);
    }
    return `event ${res.event_id}`;
}, { required: true, devices: all });

await step("bob's reply: alice's client decrypts it", async () => {
    const body = `Réponse chiffrée de bob ${runID}`;
    const res = await b1.client.sendMessage(roomId, { msgtype: "m.text", body });
    await waitDecrypted(a1, roomId, res.event_id, bob.userId, body);
}, { devices: all });

await step("bob logs in on a second device; alice sees it in device_lists and her next message reaches it", async () => {
    const mark = a1.wire.mark();
    await bob.login(b2);
    await waitUntil("bob in device_lists.changed of one of alice's /sync bodies", () => a1.wire.syncsSince(mark).some((b) => (b?.device_lists?.changed ?? []).includes(bob.userId)), {
        describe: () => `device_lists of alice's /sync bodies since the login: ${short(a1.wire.syncsSince(mark).map((b) => b.device_lists))}`,
    });
    await waitUntil(`bob-2 to hold the room as joined`, () => b2.room(roomId)?.getMyMembership() === KnownMembership.Join, {
        describe: () => `bob-2's membership: ${b2.room(roomId)?.getMyMembership() ?? "(room unknown)"}`,
    });
    await waitUntil("alice's client to know bob-2's keys", async () => {
        const m = await a1.crypto.getUserDeviceInfo([bob.userId]);
        return Boolean(m.get(bob.userId)?.get(b2.deviceId));
    }, {
        describe: () => `alice's /keys/query calls: ${a1.wire.calls.filter((c) => c.startsWith("POST /keys/query")).length}`,
    });
    const body = `Pour tous les appareils de bob ${runID}`;
    const res = await a1.client.sendMessage(roomId, { msgtype: "m.text", body });
    await waitDecrypted(b2, roomId, res.event_id, alice.userId, body);
    await waitDecrypted(b1, roomId, res.event_id, alice.userId, body);
}, { devices: all });

for (const d of all) d.stop();
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed;
console.log(`jssdk crypto: ${passed} passed, ${failed} failed`);
// Exit explicitly: timers the SDK leaves behind must not keep node alive.
process.exit(failed === 0 ? 0 : 1);
