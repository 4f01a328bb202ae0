/**
 * The few fields Berth reads from S3's XML answers, through
 * `@rgrove/parse-xml` (a small, dependency-free, spec-compliant parser that
 * refuses entity expansion tricks): the children of an element by name and
 * their text.
 *
 * @module
 */
import { parseXml, type XmlElement } from "@rgrove/parse-xml";

/** An element of an S3 answer: its name, text, and children by name. */
export interface Node {
  name: string;
  /** The element's text (concatenated text of its children). */
  text: string;
  /** Child elements with `name`, in document order. */
  all(name: string): Node[];
  /** Text of the first child `name`, or "" when there is none. */
  get(name: string): string;
}

function wrap(element: XmlElement): Node {
  const elements = () =>
    element.children.filter((c): c is XmlElement => (c as XmlElement).type === "element");
  return {
    name: element.name,
    text: element.text,
    all: (name) => elements().filter((c) => c.name === name).map(wrap),
    get: (name) => elements().find((c) => c.name === name)?.text ?? "",
  };
}

/** The root element of an XML document, or null when it is empty or not XML. */
export function parseXmlRoot(text: string): Node | null {
  if (text.trim() === "") return null;
  try {
    const root = parseXml(text).root;
    return root ? wrap(root) : null;
  } catch {
    return null;
  }
}
