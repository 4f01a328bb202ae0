import assert from "node:assert/strict";
import { AuthFileError, WatchedFile, type WatchedFileOptions } from "./file_watch.ts";

/** A file parsed as a number, a settable clock and the errors reported. */
async function setup(text: string) {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/value`;
  await Deno.writeTextFile(path, text);
  let clock = 0;
  const errors: string[] = [];
  let parses = 0;
  const options: WatchedFileOptions<number> = {
    kind: "number",
    parse(text, path) {
      parses++;
      const n = Number(text);
      if (text.trim() === "" || Number.isNaN(n)) {
        throw new AuthFileError("number", path, "line 1", `"${text}" is not a number`);
      }
      return n;
    },
    onError: (message) => errors.push(message),
    now: () => clock,
  };
  return {
    path,
    errors,
    options,
    parses: () => parses,
    tick(ms: number) {
      clock += ms;
    },
    async cleanup() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("WatchedFile.open() throws an AuthFileError naming the file when it cannot be parsed", async () => {
  const t = await setup("nope");
  await assert.rejects(() => WatchedFile.open(t.path, t.options), (error) => {
    assert.ok(error instanceof AuthFileError);
    assert.equal(
      error.message,
      `Cannot load number file "${t.path}" (line 1): "nope" is not a number`,
    );
    return true;
  });
  await t.cleanup();
});

Deno.test("WatchedFile.open() throws an AuthFileError when the file is missing", async () => {
  const t = await setup("1");
  await assert.rejects(
    () => WatchedFile.open(`${t.path}.absent`, t.options),
    (error) =>
      error instanceof AuthFileError &&
      error.message === `Cannot load number file "${t.path}.absent": no such file`,
  );
  await t.cleanup();
});

Deno.test("WatchedFile.current() picks up an edit once a second has passed", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  assert.equal(await file.current(), 1);
  await Deno.writeTextFile(t.path, "22");
  t.tick(999);
  assert.equal(await file.current(), 1, "looked again within the second");
  t.tick(1);
  assert.equal(await file.current(), 22);
  assert.deepEqual(t.errors, []);
  await t.cleanup();
});

Deno.test("WatchedFile.current() does not re-parse an unchanged file", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  for (let i = 0; i < 5; i++) {
    t.tick(1000);
    await file.current();
  }
  assert.equal(t.parses(), 1);
  await t.cleanup();
});

Deno.test("WatchedFile.current() sees a file replaced by rename", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  await Deno.writeTextFile(`${t.path}.new`, "2");
  await Deno.rename(`${t.path}.new`, t.path);
  t.tick(1000);
  assert.equal(await file.current(), 2);
  await t.cleanup();
});

Deno.test("WatchedFile.current() keeps the good version and reports a bad edit once", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  await Deno.writeTextFile(t.path, "bad");
  for (let i = 0; i < 3; i++) {
    t.tick(1000);
    assert.equal(await file.current(), 1);
  }
  assert.deepEqual(t.errors, [
    `Cannot load number file "${t.path}" (line 1): "bad" is not a number; still using the previous version`,
  ]);
  await Deno.writeTextFile(t.path, "worse");
  t.tick(1000);
  assert.equal(await file.current(), 1);
  assert.equal(t.errors.length, 2, "a second bad change is reported again");
  await Deno.writeTextFile(t.path, "3");
  t.tick(1000);
  assert.equal(await file.current(), 3);
  assert.equal(t.errors.length, 2);
  await t.cleanup();
});

Deno.test("WatchedFile.current() keeps the good version while the file is gone", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  await Deno.remove(t.path);
  t.tick(1000);
  assert.equal(await file.current(), 1);
  t.tick(1000);
  assert.equal(await file.current(), 1);
  assert.deepEqual(t.errors, [
    `Cannot load number file "${t.path}": no such file; still using the previous version`,
  ]);
  await Deno.writeTextFile(t.path, "4");
  t.tick(1000);
  assert.equal(await file.current(), 4);
  await t.cleanup();
});

Deno.test("WatchedFile.current() shares one look among concurrent callers", async () => {
  const t = await setup("1");
  const file = await WatchedFile.open(t.path, t.options);
  await Deno.writeTextFile(t.path, "5");
  t.tick(1000);
  const values = await Promise.all([file.current(), file.current(), file.current()]);
  assert.deepEqual(values, [5, 5, 5]);
  assert.equal(t.parses(), 2);
  await t.cleanup();
});
