import assert from "node:assert/strict";
import { parseXmlRoot } from "./xml.ts";

Deno.test("parseXmlRoot() reads the children and texts of an S3 listing", () => {
  const root = parseXmlRoot(
    `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <IsTruncated>true</IsTruncated>
  <Contents><Key>a/b&amp;c</Key><Size>12</Size></Contents>
  <Contents><Key>d</Key><Size>0</Size></Contents>
  <NextContinuationToken>tok</NextContinuationToken>
</ListBucketResult>`,
  );
  assert.equal(root?.name, "ListBucketResult");
  assert.equal(root.get("IsTruncated"), "true");
  assert.deepEqual(root.all("Contents").map((c) => [c.get("Key"), c.get("Size")]), [
    ["a/b&c", "12"],
    ["d", "0"],
  ]);
  assert.equal(root.get("Missing"), "");
});

Deno.test("parseXmlRoot() gives null for an empty or broken answer", () => {
  assert.equal(parseXmlRoot(""), null);
  assert.equal(parseXmlRoot("  \n"), null);
  assert.equal(parseXmlRoot("<Error><Code>x</Error>"), null);
  assert.equal(parseXmlRoot("not xml"), null);
});
