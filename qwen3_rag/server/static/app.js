// The qwen3-rag web page: search, read a document, chat, look at an index. Plain JavaScript, no build step.
//
// Every text that comes from the server goes into the page as a text node (textContent, never innerHTML), with
// control characters (terminal escapes) shown as visible symbols. The state lives in the URL, so a search can be
// shared: /?index=NAME&q=QUERY&mode=hybrid&rerank=1&k=10&filter={...}; &view=chat|index; &doc=ID&start=S&end=E.
"use strict";

const KEY_STORE = "qwen3-rag-api-key";
const SCORE_KINDS = ["dense", "bm25", "fused", "rerank"];
const DEFAULTS = { index: "", q: "", mode: "dense", rerank: false, k: 10, filter: "", view: "search", doc: "",
                   start: null, end: null };

const $ = (id) => document.getElementById(id);
const state = { ...DEFAULTS };
const server = { indexes: [], reranker: false, chat: false };
const chat = { history: [] };
let lastHits = new Map();  // "doc_id:start:end" -> the hit, for the term highlights of an opened passage
let busyCount = 0;

// ---------------------------------------------------------------------------------------------------- text

// C0 and C1 control characters (the ESC of terminal colours, BEL, ...) and bidirectional overrides are shown as
// their escapes (\x1b, \u202e), so they can neither act nor hide. Offsets are applied to the server's text first.
function visible(text) {
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

// The server counts offsets in code points, JavaScript in UTF-16 units: convert (sorted or not).
function toUnits(text, points) {
  if (!/[\ud800-\udfff]/.test(text)) return points.slice();
  const order = points.map((p, i) => [p, i]).sort((a, b) => a[0] - b[0]);
  const out = new Array(points.length);
  let unit = 0;
  let point = 0;
  for (const [target, i] of order) {
    while (point < target && unit < text.length) {
      const code = text.charCodeAt(unit);
      unit += code >= 0xd800 && code < 0xdc00 && unit + 1 < text.length ? 2 : 1;
      point += 1;
    }
    out[i] = unit;
  }
  return out;
}

function spansToUnits(text, spans) {
  const flat = toUnits(text, spans.flat());
  const out = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

// Appends text to parent with the spans (UTF-16 offsets, sorted) wrapped in <mark class=cls>, all as text nodes.
function appendMarked(parent, text, spans, cls) {
  let at = 0;
  for (const [start, end] of spans) {
    if (start < at || end <= start) continue;
    if (start > at) parent.append(visible(text.slice(at, start)));
    parent.append(el("mark", cls, visible(text.slice(start, end))));
    at = end;
  }
  if (at < text.length) parent.append(visible(text.slice(at)));
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = visible(String(text));
  return node;
}

// ---------------------------------------------------------------------------------------------------- URL state

function readUrl() {
  const params = new URLSearchParams(location.search);
  Object.assign(state, DEFAULTS);
  state.index = params.get("index") || "";
  state.q = params.get("q") || "";
  state.mode = ["dense", "hybrid", "bm25"].includes(params.get("mode")) ? params.get("mode") : "dense";
  state.rerank = ["1", "true", "yes", "on"].includes((params.get("rerank") || "").toLowerCase());
  const k = parseInt(params.get("k") || "", 10);
  state.k = Number.isFinite(k) && k > 0 ? k : DEFAULTS.k;
  state.filter = params.get("filter") || "";
  state.view = ["search", "chat", "index"].includes(params.get("view")) ? params.get("view") : "search";
  state.doc = params.get("doc") || "";
  const start = parseInt(params.get("start") || "", 10);
  const end = parseInt(params.get("end") || "", 10);
  state.start = Number.isFinite(start) ? start : null;
  state.end = Number.isFinite(end) ? end : null;
}

function urlFor(overrides = {}) {
  const s = { ...state, ...overrides };
  const params = new URLSearchParams();
  if (s.index) params.set("index", s.index);
  if (s.q) params.set("q", s.q);
  params.set("mode", s.mode);
  if (s.rerank) params.set("rerank", "1");
  params.set("k", String(s.k));
  if (s.filter) params.set("filter", s.filter);
  if (s.view !== "search") params.set("view", s.view);
  if (s.doc) {
    params.set("doc", s.doc);
    if (s.start !== null && s.end !== null) {
      params.set("start", String(s.start));
      params.set("end", String(s.end));
    }
  }
  return "/?" + params.toString();
}

function writeUrl(push) {
  const url = urlFor();
  if (url === location.pathname + location.search) return;
  if (push) history.pushState({ pushed: true }, "", url);
  else history.replaceState(null, "", url);
}

function formToState() {
  state.index = $("index").value;
  state.q = $("q").value.trim();
  state.mode = $("mode").value;
  state.rerank = $("rerank").checked;
  const k = parseInt($("k").value, 10);
  state.k = Number.isFinite(k) && k > 0 ? k : DEFAULTS.k;
  state.filter = $("filter").value.trim();
}

function stateToForm() {
  if (server.indexes.some((i) => i.name === state.index)) $("index").value = state.index;
  $("q").value = state.q;
  $("mode").value = state.mode;
  $("rerank").checked = state.rerank;
  $("k").value = String(state.k);
  $("filter").value = state.filter;
}

// ---------------------------------------------------------------------------------------------------- messages

function showError(message) {
  const box = $("error");
  box.textContent = visible(String(message));
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function showNotice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

async function busy(work) {
  busyCount += 1;
  $("main").setAttribute("aria-busy", "true");
  try {
    return await work();
  } catch (error) {
    showError(error.message || String(error));
    return undefined;
  } finally {
    busyCount -= 1;
    if (busyCount === 0) $("main").setAttribute("aria-busy", "false");
  }
}

// ---------------------------------------------------------------------------------------------------- the API

let keyPrompt = null;  // one dialog for all the requests that were refused at once

function askKey(message) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-message").textContent = visible(message);
    $("key-input").value = "";
    dialog.addEventListener("close", () => {
      keyPrompt = null;
      const key = $("key-input").value.trim();
      if (dialog.returnValue === "ok" && key) {
        sessionStorage.setItem(KEY_STORE, key);
        resolve(key);
      } else {
        resolve(null);
      }
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("key-input").focus();
  });
  return keyPrompt;
}

async function errorMessage(response) {
  let message = "";
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const error = body && body.error;
      message = typeof error === "string" ? error : (error && error.message) || (body && body.detail) || text;
    } catch (_) {
      message = text;
    }
  } catch (_) {
    message = "";
  }
  return `${message || response.statusText || "no details"} (HTTP ${response.status})`;
}

// fetch() with the API key; a 401 asks for the key (once) and retries; any other error status throws its message.
async function api(path, { method, json } = {}) {
  for (;;) {
    const headers = {};
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method: method || (json !== undefined ? "POST" : "GET"), headers,
                                     body: json !== undefined ? JSON.stringify(json) : undefined });
    } catch (error) {
      throw new Error(`cannot reach the server at ${location.origin}: ${error.message}`);
    }
    if (response.status !== 401) {
      if (!response.ok) throw new Error(await errorMessage(response));
      return response;
    }
    const message = await errorMessage(response);
    sessionStorage.removeItem(KEY_STORE);
    if ((await askKey(message)) === null) throw new Error(`${message}; give the key with the "API key" button`);
  }
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

// Waits for GET /ready (the models load after the server starts); says so while it waits.
async function waitReady() {
  for (;;) {
    let response;
    try {
      response = await fetch("/ready");
    } catch (error) {
      throw new Error(`cannot reach the server at ${location.origin}: ${error.message}`);
    }
    if (response.ok) {
      showNotice("");
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (body.error) throw new Error(body.error.message);
    showNotice("The server is loading its models…");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function parsedFilter() {
  if (!state.filter) return null;
  let value;
  try {
    value = JSON.parse(state.filter);
  } catch (error) {
    throw new Error(`the filter is not JSON (${error.message}); write it as an object, e.g. {"team": "ops"}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error('the filter must be a JSON object, e.g. {"team": "ops"} or {"year": {"$gte": 2023}}');
  }
  return value;
}

function retrievalArguments() {
  return { index: state.index, k: state.k, mode: state.mode, rerank: state.rerank, filter: parsedFilter() };
}

// ---------------------------------------------------------------------------------------------------- views

function showView(view) {
  for (const name of ["search", "document", "chat", "index"]) $(`view-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-current", tab.dataset.view === view ? "page" : "false");
  }
  $("search-form").hidden = view === "index" || view === "document";
  $("query-row").hidden = view !== "search";
}

async function route() {
  clearError();
  stateToForm();
  if (state.doc) {
    showView("document");
    await busy(openDocument);
  } else if (state.view === "index") {
    showView("index");
    await busy(showIndex);
  } else if (state.view === "chat") {
    showView("chat");
    document.title = "Chat — qwen3-rag";
  } else {
    showView("search");
    if (state.q) await busy(runSearch);
    else clearResults();
  }
}

function go(overrides, push = true) {
  Object.assign(state, overrides);
  writeUrl(push);
  return route();
}

// ---------------------------------------------------------------------------------------------------- search

function clearResults() {
  $("results").replaceChildren();
  $("summary").textContent = "";
  document.title = "qwen3-rag";
}

async function runSearch() {
  const started = performance.now();
  const body = { ...retrievalArguments(), query: state.q, highlight: true };
  const answer = await apiJson("/v1/search", { json: body });
  const hits = answer.hits || [];
  lastHits = new Map(hits.map((hit) => [hitKey(hit.doc_id, hit.start, hit.end), hit]));
  const list = $("results");
  list.replaceChildren(...hits.map((hit, i) => resultItem(hit, i + 1)));
  const how = [state.mode === "bm25" ? "BM25" : state.mode, state.rerank ? "reranked" : ""].filter(Boolean);
  const took = Math.round(performance.now() - started);
  $("summary").textContent = visible(`${hits.length} ${hits.length === 1 ? "passage" : "passages"} for “${state.q}” ` +
                                     `in ${state.index} · ${how.join(", ")} · ${took} ms`);
  document.title = visible(`${state.q} — qwen3-rag`);
}

function hitKey(docId, start, end) {
  return `${docId}\u0000${start}\u0000${end}`;
}

function where(hit) {
  const parts = [];
  if (hit.page !== null && hit.page !== undefined) parts.push(`page ${hit.page}`);
  if (hit.headings && hit.headings.length) parts.push(hit.headings.join(" › "));
  if (hit.start_line) {
    parts.push(hit.end_line && hit.end_line !== hit.start_line ? `lines ${hit.start_line}–${hit.end_line}`
                                                               : `line ${hit.start_line}`);
  }
  return parts.join(" · ");
}

function scoreBadges(hit) {
  const box = el("div", "scores");
  const scores = hit.scores || {};
  for (const kind of SCORE_KINDS) {
    if (typeof scores[kind] !== "number") continue;
    const badge = el("span", "score", null);
    badge.dataset.kind = kind;
    badge.dataset.value = String(scores[kind]);
    if (scores[kind] === hit.score) {
      badge.classList.add("ranked");
      badge.title = "the score the list is sorted by";
    }
    badge.append(el("span", "score-name", kind === "bm25" ? "BM25" : kind), " ",
                 el("span", "score-value", scores[kind].toFixed(4)));
    box.append(badge);
  }
  return box;
}

function documentLink(hit, text) {
  const link = el("a", "source", text);
  link.href = urlFor({ doc: hit.doc_id, start: hit.start, end: hit.end, view: "search" });
  link.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    go({ doc: hit.doc_id, start: hit.start, end: hit.end });
  });
  return link;
}

function resultItem(hit, rank) {
  const item = el("li", "result");
  item.dataset.docId = hit.doc_id;
  const head = el("div", "result-head");
  head.append(el("span", "rank", String(rank)), documentLink(hit, hit.source || hit.doc_id));
  const place = where(hit);
  if (place) head.append(el("span", "where", place));
  const passage = el("p", "passage");
  appendMarked(passage, hit.text, spansToUnits(hit.text, hit.highlights || []), "term");
  item.append(head, scoreBadges(hit), passage);
  passage.addEventListener("click", () => {
    if (!window.getSelection().toString()) go({ doc: hit.doc_id, start: hit.start, end: hit.end });
  });
  return item;
}

// ---------------------------------------------------------------------------------------------------- document

async function openDocument() {
  const doc = await apiJson(`/v1/indexes/${encodeURIComponent(state.index)}/documents/` +
                            encodeURIComponent(state.doc));
  $("doc-title").textContent = visible(doc.source || doc.id);
  document.title = visible(`${doc.source || doc.id} — qwen3-rag`);
  const meta = $("doc-meta");
  meta.replaceChildren();
  const fields = { id: doc.id, ...doc.metadata };
  for (const [name, value] of Object.entries(fields)) {
    meta.append(el("dt", "", name), el("dd", "", typeof value === "string" ? value : JSON.stringify(value)));
  }
  const text = doc.text || "";
  const pre = $("doc-text");
  pre.replaceChildren();
  $("doc-where").textContent = "";
  if (state.start === null || state.end === null) {
    pre.append(visible(text));
    return;
  }
  const [start, end] = toUnits(text, [state.start, state.end]);
  const passage = text.slice(start, end);
  const hit = lastHits.get(hitKey(state.doc, state.start, state.end));
  const terms = hit && hit.text === passage ? spansToUnits(passage, hit.highlights || []) : [];
  const place = hit ? where(hit) : "";
  $("doc-where").textContent = visible(`The passage is marked: ${place || `characters ${state.start}–${state.end}`}`);
  const mark = el("mark", "passage");
  mark.id = "passage";
  appendMarked(mark, passage, terms, "term");
  pre.append(visible(text.slice(0, start)), mark, visible(text.slice(end)));
  mark.scrollIntoView({ block: "center" });
}

// ---------------------------------------------------------------------------------------------------- chat

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function citationLink(citation) {
  const link = documentLink(citation, `[${citation.n}]`);
  link.className = "cite";
  link.dataset.n = String(citation.n);
  link.title = visible(citation.citation || "");
  return link;
}

// The answer with each [n] that names a passage of the context as a link to that passage.
function renderAnswer(box, text, citations) {
  const byNumber = new Map(citations.map((c) => [String(c.n), c]));
  box.replaceChildren();
  let at = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const citation = byNumber.get(match[1]);
    if (!citation) continue;
    box.append(visible(text.slice(at, match.index)), citationLink(citation));
    at = match.index + match[0].length;
  }
  box.append(visible(text.slice(at)));
}

function sourcesList(citations) {
  const list = el("ol", "sources");
  for (const citation of citations) {
    const item = el("li", citation.used ? "source-item used" : "source-item");
    item.append(citationLink(citation), " ", el("span", "", citation.citation || citation.source));
    list.append(item);
  }
  return list;
}

async function sendChat(question) {
  const messages = $("messages");
  const asked = el("div", "message user", question);
  const reply = el("div", "message assistant");
  const answer = el("div", "answer");
  answer.dataset.parts = "0";
  reply.append(answer);
  messages.append(asked, reply);
  chat.history.push({ role: "user", content: question });
  const body = { ...retrievalArguments(), messages: chat.history, stream: true };
  const response = await api("/v1/chat/completions", { json: body });
  let text = "";
  let citations = [];
  for await (const event of serverEvents(response)) {
    if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
    for (const choice of event.choices || []) {
      const part = (choice.delta && choice.delta.content) || "";
      if (!part) continue;
      text += part;
      answer.dataset.parts = String(Number(answer.dataset.parts) + 1);  // how many pieces came (streamed or not)
    }
    if (event.citations) citations = event.citations;
    answer.textContent = visible(text);
    reply.scrollIntoView({ block: "end" });
  }
  for (const c of citations) lastHits.set(hitKey(c.doc_id, c.start, c.end), c);
  renderAnswer(answer, text, citations);
  if (citations.length) reply.append(sourcesList(citations));
  reply.classList.add("done");
  chat.history.push({ role: "assistant", content: text });
}

// ---------------------------------------------------------------------------------------------------- index page

function table(caption, rows) {
  const box = el("table", "facts");
  box.append(el("caption", "", caption));
  for (const [name, value] of rows) {
    const row = el("tr");
    row.append(el("th", "", name), el("td", "", value === null || value === undefined ? "—"
                                             : typeof value === "object" ? JSON.stringify(value) : value));
    box.append(row);
  }
  return box;
}

async function showIndex() {
  const info = await apiJson(`/v1/indexes/${encodeURIComponent(state.index)}`);
  document.title = visible(`${info.name} — qwen3-rag`);
  const box = $("index-info");
  const status = info.writable ? "takes document writes" : `read-only: ${info.read_only_reason || ""}`;
  box.replaceChildren(el("h2", "", info.name), el("p", "meta", status),
                      table("Counts", Object.entries(info.counts || {})),
                      table("Index", [["type", info.index_type]]),
                      table("Chunking", Object.entries(info.chunking || {})),
                      table("Model record", Object.entries(info.model || {})));
}

// ---------------------------------------------------------------------------------------------------- start

async function loadServer() {
  await waitReady();
  const [indexes, models] = await Promise.all([apiJson("/v1/indexes"), apiJson("/v1/models")]);
  server.indexes = indexes.data || [];
  server.reranker = (models.data || []).some((m) => m.task === "rerank");
  server.chat = (models.data || []).some((m) => m.task === "chat");
  $("index").replaceChildren(...server.indexes.map((i) => {
    const option = el("option", "", i.name);
    option.value = i.name;
    return option;
  }));
  $("tab-chat").hidden = !server.chat;
  $("rerank").disabled = !server.reranker;
  $("rerank").parentElement.title = server.reranker ? "" : "this server has no reranker (start it with --reranker)";
  if (!server.indexes.length) throw new Error("this server serves no index; start it with `qwen3-rag serve INDEX`");
  if (!state.index) state.index = server.indexes[0].name;
  if (server.indexes.some((i) => i.name === state.index)) return "";
  const served = server.indexes.map((i) => i.name).join(", ");
  const asked = state.index;
  state.index = server.indexes[0].name;
  return `no index named “${asked}” is served here (served: ${served}); showing ${state.index}`;
}

function bind() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    formToState();
    if (!$("view-chat").hidden) return;
    go({ view: "search", doc: "", start: null, end: null });
  });
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("chat-input").value.trim();
    if (!question) return;
    $("chat-input").value = "";
    formToState();
    writeUrl(false);
    clearError();
    busy(() => sendChat(question));
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("index").addEventListener("change", () => {
    formToState();
    go({ doc: "", start: null, end: null });
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      formToState();
      go({ view: tab.dataset.view, doc: "", start: null, end: null });
    });
  }
  $("back").addEventListener("click", () => {
    if (history.state && history.state.pushed) history.back();
    else go({ doc: "", start: null, end: null });
  });
  $("key-button").addEventListener("click", async () => {
    if ((await askKey("Give the server's API key.")) === null) return;
    if (server.indexes.length) route();
    else load();
  });
  window.addEventListener("popstate", () => {
    readUrl();
    route();
  });
}

// Reads what the server serves, then shows what the address asks for.
async function load() {
  clearError();
  const warning = await busy(loadServer);
  if (warning === undefined) return;  // the server could not be read: the error is shown
  writeUrl(false);
  await route();
  if (warning) showError(warning);
}

function start() {
  readUrl();
  bind();
  stateToForm();
  showView(state.doc ? "document" : state.view);
  load();
}

start();
