export * from "./fsck/fsck.ts";
