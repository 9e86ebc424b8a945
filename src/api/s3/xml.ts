/**
 * The XML of the S3 endpoint: a writer for response documents and error bodies, and a small
 * reader for the request bodies S3 takes (CompleteMultipartUpload, DeleteObjects,
 * CreateBucketConfiguration, VersioningConfiguration, AccessControlPolicy). The reader knows
 * elements, text, attributes (skipped), comments, CDATA, the XML declaration and the five
 * predefined entities plus character references; it refuses DOCTYPE (no entity expansion, no
 * external fetches) and anything past its limits, each as MalformedXML naming what was wrong.
 * No dependency: the bodies are tiny and their shapes fixed.
 */
import type { Readable } from 'node:stream';
import { S3Error } from './errors.js';

export const S3_XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';
/** The largest request document read (DeleteObjects of 1,000 keys of 1,024 bytes fits). */
export const MAX_XML_BODY_BYTES = 2 * 1024 * 1024;
const MAX_XML_DEPTH = 16;
const MAX_XML_ELEMENTS = 20_000;

/** A child of an element being written: an element, or nothing (skipped). */
export type XmlChild = string | undefined | false;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&apos;'));
}

/** `<name>text</name>` with the text escaped. */
export function textElement(name: string, text: string | number | boolean): string {
  return `<${name}>${escapeXml(String(text))}</${name}>`;
}

/** `<name>children</name>`; the children are elements already written. */
export function element(name: string, children: readonly XmlChild[]): string {
  return `<${name}>${children.filter((c): c is string => typeof c === 'string').join('')}</${name}>`;
}

/** A whole response document with S3's namespace on its root. */
export function xmlDocument(root: string, children: readonly XmlChild[]): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="${S3_XMLNS}">${children.filter((c): c is string => typeof c === 'string').join('')}</${root}>`;
}

/** S3's error body: Code, Message, Resource, RequestId and any extra elements. */
export function errorXml(code: string, message: string, resource: string, requestId: string, extra: Readonly<Record<string, string>> = {}): string {
  const more = Object.entries(extra).map(([name, value]) => textElement(name, value));
  return `<?xml version="1.0" encoding="UTF-8"?>\n${element('Error', [textElement('Code', code), textElement('Message', message), textElement('Resource', resource), textElement('RequestId', requestId), ...more])}`;
}

/** A parsed element: its local name (prefix dropped), child elements and text. */
export interface XmlElement {
  readonly name: string;
  readonly children: XmlElement[];
  text: string;
}

function malformed(why: string): S3Error {
  return new S3Error('MalformedXML', `the XML you provided was not well-formed or did not validate against our published schema: ${why}`);
}

const NAME = /^[A-Za-z_][\w.:-]*/;

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]{1,6}|#\d{1,7}|[a-z]+);|&/g, (all, ref: string | undefined) => {
    if (ref === undefined) throw malformed("a bare '&' (write &amp;)");
    if (ref.startsWith('#')) {
      const code = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) throw malformed(`the character reference ${all} is not a character`);
      return String.fromCodePoint(code);
    }
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    const value = named[ref];
    if (value === undefined) throw malformed(`unknown entity ${all}`);
    return value;
  });
}

function localName(qualified: string): string {
  const colon = qualified.indexOf(':');
  return colon < 0 ? qualified : qualified.slice(colon + 1);
}

/** Parses a document into its root element. */
export function parseXml(text: string): XmlElement {
  let pos = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  let elements = 0;
  const skip = (until: string, what: string): void => {
    const end = text.indexOf(until, pos);
    if (end < 0) throw malformed(`an unterminated ${what}`);
    pos = end + until.length;
  };
  while (pos < text.length) {
    const lt = text.indexOf('<', pos);
    const chunk = text.slice(pos, lt < 0 ? text.length : lt);
    const top = stack[stack.length - 1];
    if (top !== undefined) top.text += decodeEntities(chunk);
    else if (chunk.trim() !== '') throw malformed(`text outside the root element: '${chunk.trim().slice(0, 40)}'`);
    if (lt < 0) break;
    pos = lt;
    if (text.startsWith('<?', pos)) {
      if (root !== undefined || stack.length > 0) throw malformed('a processing instruction inside the document');
      skip('?>', 'XML declaration');
    } else if (text.startsWith('<!--', pos)) {
      skip('-->', 'comment');
    } else if (text.startsWith('<![CDATA[', pos)) {
      const end = text.indexOf(']]>', pos);
      if (end < 0 || top === undefined) throw malformed('a CDATA section outside an element or unterminated');
      top.text += text.slice(pos + 9, end);
      pos = end + 3;
    } else if (text.startsWith('<!', pos)) {
      throw malformed('DOCTYPE and entity declarations are not accepted');
    } else if (text.startsWith('</', pos)) {
      const m = NAME.exec(text.slice(pos + 2, pos + 2 + 300));
      const open = stack.pop();
      if (!m || open === undefined || localName(m[0]) !== open.name) throw malformed(`a closing tag '</${m?.[0] ?? ''}>' that closes nothing open`);
      pos += 2 + m[0].length;
      const close = text.indexOf('>', pos);
      if (close < 0 || text.slice(pos, close).trim() !== '') throw malformed(`a malformed closing tag </${m[0]}>`);
      pos = close + 1;
      open.text = open.children.length > 0 ? open.text.trim() : open.text;
    } else {
      const m = NAME.exec(text.slice(pos + 1, pos + 1 + 300));
      if (!m) throw malformed(`'<' not followed by an element name at offset ${pos}`);
      const close = text.indexOf('>', pos);
      if (close < 0) throw malformed(`an unterminated tag <${m[0]}`);
      const selfClosing = text[close - 1] === '/';
      // Attributes (xmlns and the like) are skipped; a '>' inside a quoted value is not expected here.
      const el: XmlElement = { name: localName(m[0]), children: [], text: '' };
      if (++elements > MAX_XML_ELEMENTS) throw malformed(`more than ${MAX_XML_ELEMENTS} elements`);
      const parent = stack[stack.length - 1];
      if (parent !== undefined) parent.children.push(el);
      else if (root !== undefined) throw malformed('more than one root element');
      else root = el;
      if (!selfClosing) {
        stack.push(el);
        if (stack.length > MAX_XML_DEPTH) throw malformed(`elements nested deeper than ${MAX_XML_DEPTH}`);
      }
      pos = close + 1;
    }
  }
  if (stack.length > 0) throw malformed(`the element <${stack[stack.length - 1]!.name}> is not closed`);
  if (root === undefined) throw malformed('the body has no root element');
  return root;
}

/** The children named `name`. */
export function childrenNamed(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/** The text of the one child named `name`; undefined when absent; MalformedXML when repeated. */
export function childText(el: XmlElement, name: string): string | undefined {
  const found = childrenNamed(el, name);
  if (found.length > 1) throw malformed(`<${el.name}> has more than one <${name}>`);
  return found[0]?.text;
}

/** Reads a request's XML document (at most `maxBytes`) and parses it, checking the root's name. */
export async function readXmlBody(body: Readable, expectedRoot: string, maxBytes = MAX_XML_BODY_BYTES): Promise<XmlElement> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const part of body) {
    total += (part as Buffer).length;
    if (total > maxBytes) {
      body.destroy();
      throw new S3Error('MalformedXML', `the XML body is larger than ${maxBytes} bytes`);
    }
    parts.push(part as Buffer);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(parts));
  } catch {
    throw malformed('the body is not UTF-8');
  }
  if (text.trim() === '') throw malformed(`the body is empty; send a <${expectedRoot}> document`);
  const root = parseXml(text);
  if (root.name !== expectedRoot) throw malformed(`the root element is <${root.name}>, expected <${expectedRoot}>`);
  return root;
}
