// A minimal tus 1.0 client over XMLHttpRequest that sends exactly what tus-js-client (v4) sends:
//   creation  POST  Tus-Resumable, Upload-Length, Upload-Metadata (no body)
//   append    PATCH Tus-Resumable, Upload-Offset, Content-Type: application/offset+octet-stream
//             (overridePatchMethod: POST with X-HTTP-Method-Override: PATCH)
//   resume    HEAD  Tus-Resumable, then PATCH from the Upload-Offset it answers
// plus the application's own Authorization: Bearer header; withCredentials stays false, as in tus-js-client.
// The upload URL is kept in localStorage (tus-js-client's fingerprint store), so a reload resumes.
//
// Query parameters: api (the CaseFiles origin), token, case, size (bytes), chunk (bytes), seed,
// override=1 (overridePatchMethod), stopAfter=N (stop after N appends, to be reloaded mid-way).
"use strict";

const params = new URLSearchParams(location.search);
const api = params.get("api");
const token = params.get("token");
const caseNumber = params.get("case");
const size = Number(params.get("size"));
const chunkSize = Number(params.get("chunk"));
const seed = Number(params.get("seed") || "1");
const override = params.get("override") === "1";
const stopAfter = params.has("stopAfter") ? Number(params.get("stopAfter")) : Infinity;
const storageKey = `tus::foreign::${caseNumber}::${size}::${seed}`;

window.tusLog = [];  // every request: method, status, and what the page could read of the answer

function report(state, detail) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = `${state}: ${detail || ""}`;
  window.tusState = { state, detail: detail || "", url: localStorage.getItem(storageKey), log: window.tusLog };
}

// The file's bytes: the same pattern test_cors.py computes (byte i = (i * 31 + seed * 7 + (i >> 13)) & 255).
function content() {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed * 7 + (i >> 13)) & 255;
  return bytes;
}

function request(method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    xhr.withCredentials = false;
    xhr.setRequestHeader("Tus-Resumable", "1.0.0");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.onload = () => {
      window.tusLog.push({ method, status: xhr.status, location: xhr.getResponseHeader("Location"),
                           offset: xhr.getResponseHeader("Upload-Offset"),
                           tusResumable: xhr.getResponseHeader("Tus-Resumable") });
      resolve(xhr);
    };
    // A CORS refusal: the browser hides everything, status 0 (tus-js-client reports "tus: failed to ...").
    xhr.onerror = () => {
      window.tusLog.push({ method, status: xhr.status, error: true });
      reject(new Error(`${method} ${url} failed at the network level (status ${xhr.status})`));
    };
    xhr.send(body === undefined ? null : body);
  });
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function create() {
  const xhr = await request("POST", `${api}/api/v1/cases/${caseNumber}/uploads`, {
    "Upload-Length": String(size),
    "Upload-Metadata": `filename ${b64("foreign-origin.bin")},filetype ${b64("application/octet-stream")}`,
  });
  if (xhr.status !== 201) throw new Error(`creation answered ${xhr.status}: ${xhr.responseText}`);
  const relative = xhr.getResponseHeader("Location");
  if (!relative) throw new Error("creation answered 201 without a readable Location");
  return new URL(relative, api).href;  // tus-js-client resolves Location against the endpoint too
}

async function offsetOf(url) {
  const xhr = await request("HEAD", url, {});
  if (xhr.status !== 200) throw new Error(`HEAD answered ${xhr.status}`);
  const offset = xhr.getResponseHeader("Upload-Offset");
  if (offset === null) throw new Error("HEAD answered without a readable Upload-Offset");
  return Number(offset);
}

async function append(url, offset, bytes) {
  const headers = { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" };
  let method = "PATCH";
  if (override) {
    method = "POST";
    headers["X-HTTP-Method-Override"] = "PATCH";
  }
  const xhr = await request(method, url, headers, bytes);
  if (xhr.status !== 204) throw new Error(`${method} answered ${xhr.status}: ${xhr.responseText}`);
  const next = xhr.getResponseHeader("Upload-Offset");
  if (next === null) throw new Error("append answered without a readable Upload-Offset");
  return Number(next);
}

async function run() {
  report("running");
  const bytes = content();
  let url = localStorage.getItem(storageKey);
  let offset = 0;
  if (url) {
    offset = await offsetOf(url);
    report("running", `resumed at ${offset}`);
  } else {
    url = await create();
    localStorage.setItem(storageKey, url);
  }
  let appends = 0;
  while (offset < size) {
    if (appends === stopAfter) {
      report("paused", String(offset));
      return;
    }
    offset = await append(url, offset, bytes.slice(offset, Math.min(size, offset + chunkSize)));
    appends++;
  }
  localStorage.removeItem(storageKey);
  report("done", url);
}

run().catch((error) => report("error", String(error.message || error)));
