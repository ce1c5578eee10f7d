// Shared by the matrix-js-sdk end-to-end tests: the Node 20 polyfills, the
// server's base URL, step failures, waiting for a condition with a described
// timeout, and keeping the SDK's logs quiet. Import it before the SDK.

// --- Node 20 polyfills ------------------------------------------------------
// matrix-js-sdk declares node >= 22. What it uses that Node 20 lacks is
// Promise.withResolvers (ES2024); this is the spec'd behaviour. The tests import
// the SDK dynamically, after this module has run.
if (typeof Promise.withResolvers !== "function") {
    Object.defineProperty(Promise, "withResolvers", {
        configurable: true,
        writable: true,
        value: function withResolvers() {
            let resolve, reject;
            const promise = new this((res, rej) => {
                resolve = res;
                reject = rej;
            });
            return { promise, resolve, reject };
        },
    });
}


// baseUrlFromEnv is CHAPPE_BASE_URL without trailing slashes; the process
// exits if it is not set.
export function baseUrlFromEnv() {
    const url = (process.env.CHAPPE_BASE_URL ?? "").replace(/\/+$/, "");
    if (!url) {
        console.error("CHAPPE_BASE_URL is not set: give the server's client API base URL, e.g. http://127.0.0.1:8008");
        process.exit(2);
    }
    return url;
}

export class StepFailure extends Error {}

export function fail(msg) {
    throw new StepFailure(msg);
}

export function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

export function safeJSON(v) {
    try {
        return JSON.stringify(v);
    } catch {
        return String(v);
    }
}

export function short(v, n = 300) {
    if (v === undefined) return "undefined";
    const s = typeof v === "string" ? v : safeJSON(v);
    return s.length > n ? s.slice(0, n) + "…" : s;
}

// quietSdkLogs keeps the SDK's loggers (each child created at debug level
// copies the root's methodFactory) to warnings and errors unless verbose.
export function quietSdkLogs(sdkGlobalLogger, verbose) {
    const original = sdkGlobalLogger.methodFactory;
    sdkGlobalLogger.methodFactory = (method, level, name) => {
        if (!verbose && !["warn", "error"].includes(method)) return () => {};
        const log = original(method, level, name);
        // loglevel calls the method on the logger: keep its `this`.
        return function (...args) {
            return log.call(this, "    [sdk]", ...args);
        };
    };
    sdkGlobalLogger.rebuild();
}

// waitUntilWithin returns waitUntil(what, check, {emitters, ms, describe}),
// which resolves with check()'s first truthy value, re-checking on each of
// the given emitter events and every 50 ms, and fails the step with
// describe() after ms (defaultMs when not given).
export function waitUntilWithin(defaultMs) {
    const STEP_TIMEOUT = defaultMs;
    return async function waitUntil(what, check, { emitters = [], ms = STEP_TIMEOUT, describe } = {}) {
    const first = await check();
    if (first) return first;
    return new Promise((resolve, reject) => {
        let done = false;
        const listeners = [];
        const finish = (fn, v) => {
            if (done) return;
            done = true;
            clearInterval(poll);
            clearTimeout(timer);
            for (const [em, ev, l] of listeners) em.off(ev, l);
            fn(v);
        };
        const recheck = async () => {
            if (done) return;
            try {
                const v = await check();
                if (v) finish(resolve, v);
            } catch (e) {
                finish(reject, e);
            }
        };
        for (const [em, ev] of emitters) {
            const l = () => void recheck();
            em.on(ev, l);
            listeners.push([em, ev, l]);
        }
        const poll = setInterval(recheck, 50);
        const timer = setTimeout(() => {
            let detail = "";
            try {
                detail = describe ? `; ${describe()}` : "";
            } catch (e) {
                detail = `; (describing the state failed: ${e})`;
            }
            finish(reject, new StepFailure(`timed out after ${ms} ms waiting for ${what}${detail}`));
        }, ms);
    });
}
}
