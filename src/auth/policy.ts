/**
 * Who may pull, push and delete where: the policy file.
 *
 * ```json
 * {
 *   "groups": { "team-a": ["alice", "bob"] },
 *   "rules": [
 *     { "repository": "**",        "who": ["*"],            "allow": ["pull"] },
 *     { "repository": "team-a/**", "who": ["group:team-a"], "allow": ["pull", "push", "delete"] },
 *     { "repository": "public/*",  "who": ["anonymous"],    "allow": ["pull"] },
 *     { "repository": "team-a/secret", "who": ["bob"],      "allow": [] }
 *   ]
 * }
 * ```
 *
 * - `repository` is a glob over the whole name: `*` is any characters within
 *   one path segment, `**` any characters across segments (`a/**` matches
 *   `a/x` and `a/x/y`, not `a`); everything else is literal.
 * - `who`: a user name, `group:NAME`, `*` (any signed-in user) or `anonymous`
 *   (everyone, signed in or not).
 * - The most specific rule that matches the repository and the caller wins:
 *   first the repository (more literal characters, then fewer `**`, then fewer
 *   `*`), then the subject (user > group > `*` > `anonymous`). Its `allow` is
 *   what the caller may do; `[]` denies. Equally specific winners add up.
 * - No matching rule: nothing is allowed.
 *
 * Globs are compiled once, when the file is read. {@linkcode PolicyFile}
 * applies edits without a restart.
 *
 * @module
 */
import { AuthFileError, WatchedFile } from "./file_watch.ts";
import { type Action, ACTIONS } from "./scope.ts";

const GLOB_REGEXP = /^[a-z0-9._\-*]+(\/[a-z0-9._\-*]+)*$/;
const SUBJECT_RANK = { user: 3, group: 2, authenticated: 1, anonymous: 0 } as const;

interface Rule {
  /** The rule's position in the file, from 0. */
  index: number;
  glob: RegExp;
  /** Repository specificity: literal characters, `**` count, `*` count. */
  literals: number;
  doubleStars: number;
  singleStars: number;
  users: Set<string>;
  groups: Set<string>;
  authenticated: boolean;
  anonymous: boolean;
  allow: Action[];
}

/** Compiles a repository glob into an anchored RegExp, with its specificity. */
function compileGlob(
  glob: string,
): Pick<Rule, "glob" | "literals" | "doubleStars" | "singleStars"> {
  let source = "^";
  let literals = 0, doubleStars = 0, singleStars = 0;
  for (const token of glob.match(/\*\*|\*|[^*]+/g) ?? []) {
    if (token === "**") {
      doubleStars++;
      source += ".*";
    } else if (token === "*") {
      singleStars++;
      source += "[^/]*";
    } else {
      literals += token.length;
      source += token.replace(/[.\-]/g, "\\$&");
    }
  }
  return { glob: new RegExp(`${source}$`), literals, doubleStars, singleStars };
}

function globProblem(glob: unknown): string | null {
  if (typeof glob !== "string") return "must be a string";
  if (!GLOB_REGEXP.test(glob)) {
    return "must be segments of a-z, 0-9, '.', '_', '-', '*' separated by single '/'";
  }
  if (glob.includes("***")) return `has "***"; use "*" or "**"`;
  return null;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === "string");
}

/**
 * Parses and checks a policy file.
 * @throws {AuthFileError} naming the key or rule (from 0) at fault.
 */
export function parsePolicy(text: string, path: string): Policy {
  const fail = (where: string | null, detail: string) =>
    new AuthFileError("policy", path, where, detail);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw fail(null, `not JSON: ${(error as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw fail(null, `expected an object with "rules" (and "groups")`);
  }
  const top = json as Record<string, unknown>;
  for (const key of Object.keys(top)) {
    if (key !== "groups" && key !== "rules") {
      throw fail(null, `unknown key "${key}"; expected "groups" and "rules"`);
    }
  }
  const groups = new Map<string, Set<string>>();
  const rawGroups = top.groups ?? {};
  if (typeof rawGroups !== "object" || rawGroups === null || Array.isArray(rawGroups)) {
    throw fail(null, `"groups" must be an object of group name to user names`);
  }
  for (const [name, members] of Object.entries(rawGroups)) {
    if (name === "") throw fail(null, `a group name is empty`);
    if (!isStringArray(members)) {
      throw fail(`group "${name}"`, "members must be an array of user names");
    }
    groups.set(name, new Set(members));
  }
  if (!Array.isArray(top.rules)) throw fail(null, `"rules" must be an array`);
  const rules: Rule[] = top.rules.map((raw: unknown, index) => {
    const where = `rule ${index}`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw fail(where, `expected an object with "repository", "who" and "allow"`);
    }
    const rule = raw as Record<string, unknown>;
    for (const key of Object.keys(rule)) {
      if (!["repository", "who", "allow"].includes(key)) {
        throw fail(where, `unknown key "${key}"; expected "repository", "who" and "allow"`);
      }
    }
    const problem = globProblem(rule.repository);
    if (problem) throw fail(where, `"repository" ${problem}`);
    if (!isStringArray(rule.who)) throw fail(where, `"who" must be an array of strings`);
    if (rule.who.length === 0) throw fail(where, `"who" is empty, so the rule applies to no one`);
    if (!isStringArray(rule.allow)) throw fail(where, `"allow" must be an array of actions`);
    const compiled: Rule = {
      index,
      ...compileGlob(rule.repository as string),
      users: new Set(),
      groups: new Set(),
      authenticated: false,
      anonymous: false,
      allow: [],
    };
    for (const action of rule.allow) {
      if (!(ACTIONS as string[]).includes(action)) {
        throw fail(where, `unknown action "${action}"; expected ${ACTIONS.join(", ")}`);
      }
      compiled.allow.push(action as Action);
    }
    for (const who of rule.who) {
      if (who === "*") compiled.authenticated = true;
      else if (who === "anonymous") compiled.anonymous = true;
      else if (who.startsWith("group:")) {
        const group = who.slice("group:".length);
        if (!groups.has(group)) throw fail(where, `unknown group "${group}" in "who"`);
        compiled.groups.add(group);
      } else if (who === "") throw fail(where, `an entry of "who" is empty`);
      else compiled.users.add(who);
    }
    return compiled;
  });
  return new Policy(rules, groups);
}

/** Compares two rule specificities: positive when `a` is more specific. */
function compare(a: Rule, aSubject: number, b: Rule, bSubject: number): number {
  return a.literals - b.literals || b.doubleStars - a.doubleStars ||
    b.singleStars - a.singleStars || aSubject - bSubject;
}

/** A parsed policy: answers what a caller may do to a repository. */
export class Policy {
  #rules: Rule[] | null;
  /** User name to the groups it belongs to. */
  #memberOf = new Map<string, Set<string>>();

  /** Use {@linkcode parsePolicy} or {@linkcode Policy.everything}. */
  constructor(rules: Rule[] | null, groups: Map<string, Set<string>>) {
    this.#rules = rules;
    for (const [group, members] of groups) {
      for (const user of members) {
        const of = this.#memberOf.get(user) ?? new Set();
        of.add(group);
        this.#memberOf.set(user, of);
      }
    }
  }

  /** The policy without a file: signed-in users may do everything, anonymous callers nothing. */
  static everything(): Policy {
    return new Policy(null, new Map());
  }

  /**
   * What `user` (null for an anonymous caller) may do to `repository`.
   * @returns a new set, empty when nothing is allowed.
   */
  allowed(user: string | null, repository: string): Set<Action> {
    if (this.#rules === null) return new Set(user === null ? [] : ACTIONS);
    let best: Rule[] = [];
    let bestSubject = -1;
    for (const rule of this.#rules) {
      const subject = this.#subjectRank(rule, user);
      if (subject < 0 || !rule.glob.test(repository)) continue;
      const order = best.length === 0 ? 1 : compare(rule, subject, best[0]!, bestSubject);
      if (order > 0) {
        best = [rule];
        bestSubject = subject;
      } else if (order === 0) best.push(rule);
    }
    return new Set(best.flatMap((rule) => rule.allow));
  }

  /** How specifically `rule` names `user`, or -1 when it does not apply to them. */
  #subjectRank(rule: Rule, user: string | null): number {
    if (user !== null) {
      if (rule.users.has(user)) return SUBJECT_RANK.user;
      if (rule.groups.size > 0) {
        for (const group of this.#memberOf.get(user) ?? []) {
          if (rule.groups.has(group)) return SUBJECT_RANK.group;
        }
      }
      if (rule.authenticated) return SUBJECT_RANK.authenticated;
    }
    return rule.anonymous ? SUBJECT_RANK.anonymous : -1;
  }
}

/** A policy file whose edits apply without a restart (a bad edit keeps the previous policy). */
export class PolicyFile {
  #file: WatchedFile<Policy>;

  private constructor(file: WatchedFile<Policy>) {
    this.#file = file;
  }

  /**
   * Loads the policy file.
   * @throws {AuthFileError} naming the file and the rule at fault.
   */
  static async open(
    path: string,
    options: { onError?: (message: string) => void; now?: () => number } = {},
  ): Promise<PolicyFile> {
    return new PolicyFile(
      await WatchedFile.open(path, { kind: "policy", parse: parsePolicy, ...options }),
    );
  }

  /** The current policy, after looking at the file if a second has passed. */
  current(): Promise<Policy> {
    return this.#file.current();
  }

  /** What `user` (null for anonymous) may do to `repository`, under the current policy. */
  async allowed(user: string | null, repository: string): Promise<Set<Action>> {
    return (await this.current()).allowed(user, repository);
  }
}
