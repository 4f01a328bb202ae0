import assert from "node:assert/strict";
import {
  ADDRESS_FREE_FAILURES,
  addressKey,
  FORGET_AFTER_MS,
  LoginThrottle,
  MAX_TRACKED,
  TRUST_MS,
  USER_FREE_FAILURES,
} from "./throttle.ts";

function throttle() {
  let clock = 1_000_000;
  const t = new LoginThrottle({ now: () => clock });
  return {
    t,
    tick(ms: number) {
      clock += ms;
    },
    failMany(n: number, address: (i: number) => string, user: string | null) {
      for (let i = 0; i < n; i++) t.failed(address(i), user);
    },
  };
}

Deno.test("LoginThrottle.check() lets an address fail 10 times, then backs off exponentially to 5 minutes", () => {
  const { t, tick } = throttle();
  for (let i = 0; i < ADDRESS_FREE_FAILURES; i++) {
    assert.equal(t.check("192.0.2.1", null), 0);
    t.failed("192.0.2.1", null);
  }
  assert.equal(t.check("192.0.2.1", null), 0);
  const waits: number[] = [];
  for (let i = 0; i < 12; i++) {
    t.failed("192.0.2.1", null);
    const wait = t.check("192.0.2.1", null);
    waits.push(wait);
    tick(wait * 1000);
    assert.equal(t.check("192.0.2.1", null), 0);
  }
  assert.deepEqual(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
  assert.equal(t.check("192.0.2.2", null), 0, "another address is not affected");
});

Deno.test("LoginThrottle.check() forgets an address's failures after a quiet minute", () => {
  const { t, tick, failMany } = throttle();
  failMany(ADDRESS_FREE_FAILURES + 1, () => "192.0.2.1", null);
  assert.equal(t.check("192.0.2.1", null), 1);
  tick(1000 + FORGET_AFTER_MS - 1);
  t.failed("192.0.2.1", null);
  assert.equal(t.check("192.0.2.1", null), 2, "not quiet long enough: still counted");
  tick(2000 + FORGET_AFTER_MS);
  failMany(ADDRESS_FREE_FAILURES, () => "192.0.2.1", null);
  assert.equal(t.check("192.0.2.1", null), 0);
});

Deno.test("LoginThrottle.check() locks a user failing from many addresses for 30 s at most", () => {
  const { t, tick, failMany } = throttle();
  failMany(USER_FREE_FAILURES, (i) => `198.51.100.${i}`, "alice");
  assert.equal(t.check("203.0.113.9", "alice"), 0);
  t.failed("198.51.100.200", "alice");
  assert.equal(t.check("203.0.113.9", "alice"), 1);
  assert.equal(t.check("203.0.113.9", "bob"), 0, "other users are not affected");
  assert.equal(t.check("203.0.113.9", null), 0);
  failMany(20, (i) => `198.51.100.${100 + i}`, "alice");
  assert.equal(t.check("203.0.113.9", "alice"), 30);
  tick(30_000);
  assert.equal(t.check("203.0.113.9", "alice"), 0);
});

Deno.test("LoginThrottle.check() exempts a user's recent addresses from the user lock", () => {
  const { t, tick, failMany } = throttle();
  t.succeeded("203.0.113.7", "alice");
  failMany(40, (i) => `198.51.100.${i}`, "alice");
  assert.equal(t.check("203.0.113.7", "alice"), 0, "trusted address");
  assert.equal(t.check("203.0.113.8", "alice"), 30, "untrusted address");
  tick(TRUST_MS);
  assert.equal(t.check("203.0.113.7", "alice"), 0, "lock over, trust expired");
  failMany(USER_FREE_FAILURES + 1, (i) => `198.51.100.${i}`, "alice");
  assert.equal(t.check("203.0.113.7", "alice"), 1, "trust expired after 24 h");
});

Deno.test("LoginThrottle.failed() does not count a trusted address's failures against the user", () => {
  const { t, failMany } = throttle();
  t.succeeded("203.0.113.7", "alice");
  failMany(ADDRESS_FREE_FAILURES, () => "203.0.113.7", "alice");
  failMany(USER_FREE_FAILURES, (i) => `198.51.100.${i}`, "alice");
  assert.equal(t.check("198.51.100.250", "alice"), 0);
});

Deno.test("LoginThrottle.succeeded() clears the user's failures but not the address's", () => {
  const { t, failMany } = throttle();
  failMany(USER_FREE_FAILURES, (i) => `198.51.100.${i}`, "alice");
  failMany(ADDRESS_FREE_FAILURES, () => "192.0.2.1", "bob");
  t.succeeded("192.0.2.1", "alice");
  t.succeeded("192.0.2.1", "bob");
  t.failed("198.51.100.250", "alice");
  assert.equal(t.check("198.51.100.251", "alice"), 0, "alice's failures were cleared");
  t.failed("192.0.2.1", "carol");
  assert.equal(t.check("192.0.2.1", "carol"), 1, "the address kept its count");
  assert.equal(t.check("192.0.2.1", "bob"), 0, "bob's own pair keeps its own budget");
});

Deno.test("LoginThrottle.check() counts IPv6 addresses per /64", () => {
  const { t, failMany } = throttle();
  failMany(ADDRESS_FREE_FAILURES + 1, (i) => `2001:db8:1:2::${i.toString(16)}`, null);
  assert.equal(t.check("2001:db8:1:2:ffff::1", null), 1);
  assert.equal(t.check("2001:db8:1:3::1", null), 0);
});

Deno.test("LoginThrottle tracks a bounded number of addresses, forgetting the oldest", () => {
  const { t, failMany } = throttle();
  failMany(ADDRESS_FREE_FAILURES + 1, () => "192.0.2.1", null);
  failMany(MAX_TRACKED - 1, (i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, null);
  assert.equal(t.check("192.0.2.1", null), 1, "still tracked");
  t.failed("10.255.255.255", null);
  assert.equal(t.check("192.0.2.1", null), 0, "forgotten");
});

Deno.test("addressKey() keeps IPv4 and reduces IPv6 to its /64", () => {
  const cases: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["2001:0DB8:0000:0001:aaaa:bbbb:cccc:dddd", "2001:db8:0:1::/64"],
    ["2001:db8:0:1::", "2001:db8:0:1::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ];
  for (const [address, key] of cases) assert.equal(addressKey(address), key, address);
});

Deno.test("LoginThrottle.check() counts checks in flight, each credential once, so parallel guesses get the same budget", () => {
  const { t } = throttle();
  for (let i = 0; i < ADDRESS_FREE_FAILURES - 1; i++) {
    assert.equal(t.check("192.0.2.9", "alice"), 0, `check ${i}`);
    t.begin("192.0.2.9", `guess ${i}`);
  }
  // The same credential again (parallel requests with one password) adds nothing.
  t.begin("192.0.2.9", "guess 0");
  assert.equal(t.check("192.0.2.9", "alice"), 0, "the budget's last check");
  t.begin("192.0.2.9", "guess last");
  assert.ok(t.check("192.0.2.9", "alice") > 0, "over the budget while they are in flight");
  assert.equal(t.check("192.0.2.10", "bob"), 0, "other addresses are not held");
  for (let i = 0; i < ADDRESS_FREE_FAILURES - 1; i++) t.end("192.0.2.9", `guess ${i}`);
  t.end("192.0.2.9", "guess 0");
  t.end("192.0.2.9", "guess last");
  assert.equal(t.check("192.0.2.9", "alice"), 0, "they ended well: nothing counted");
});

Deno.test("LoginThrottle.check() gives a user's trusted address a budget of its own", () => {
  const { t, tick } = throttle();
  t.succeeded("192.0.2.9", "alice");
  // A neighbour behind the same address fails often: the address is locked for others...
  for (let i = 0; i < ADDRESS_FREE_FAILURES + 3; i++) t.failed("192.0.2.9", "mallory");
  assert.ok(t.check("192.0.2.9", "mallory") > 0);
  assert.ok(t.check("192.0.2.9", null) > 0);
  // ...but not for alice there.
  assert.equal(t.check("192.0.2.9", "alice"), 0);
  // Guessing alice's password from there meets the pair's own budget.
  for (let i = 0; i < ADDRESS_FREE_FAILURES; i++) t.failed("192.0.2.9", "alice");
  assert.equal(t.check("192.0.2.9", "alice"), 0, "ten failures are free");
  t.failed("192.0.2.9", "alice");
  assert.ok(t.check("192.0.2.9", "alice") > 0, "then it backs off");
  tick(2000);
  t.succeeded("192.0.2.9", "alice");
  assert.equal(t.check("192.0.2.9", "alice"), 0, "a success clears the pair");
});
