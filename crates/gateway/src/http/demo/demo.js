// The demo console: plain DOM and fetch, no dependencies. Every call is the documented tenant
// API; nothing here is private to the console.
'use strict';

// Drawn over the photo; the browser test looks for these exact colours in a screenshot.
const BOX_COLOUR = '#00ff00';
const LANDMARK_COLOUR = '#ff00ff';
const STATUS_NAMES = { 1: 'queuing', 2: 'processing', 3: 'success', 4: 'failed' };

const $ = (id) => document.getElementById(id);
const state = { auth: null, session: null, stream: null };

// ---- errors -------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, code, msg) {
    super(`HTTP ${status}: code ${code}: ${msg}`);
    Object.assign(this, { status, code, msg });
  }
}

function showError(err) {
  const box = $('error');
  box.textContent = err instanceof ApiFailure
    ? `Error ${err.code} (HTTP ${err.status}): ${err.msg}`
    : `Error: ${err.message || err}`;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// Runs a button's action with the button disabled meanwhile, reporting any failure.
function action(button, fn) {
  button.addEventListener('click', async (ev) => {
    ev.preventDefault();
    clearError();
    button.disabled = true;
    try {
      await fn();
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
      refreshButtons();
    }
  });
}

// ---- HTTP ---------------------------------------------------------------------------------

function authHeaders() {
  if (!state.auth) throw new Error('get a token or enter an API key first (step 1)');
  return state.auth.kind === 'key'
    ? { 'x-api-key': state.auth.value }
    : { authorization: `Bearer ${state.auth.value}` };
}

// Calls the API and returns the parsed body; any answer other than success throws with its
// envelope code (`code`/`msg`, or `error_code`/`error_msg` for detection).
async function call(method, path, body, { auth = true } = {}) {
  const headers = auth ? authHeaders() : {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try {
    json = await resp.json();
  } catch {
    throw new ApiFailure(resp.status, '—', 'the answer is not JSON');
  }
  const code = json.code ?? json.error_code;
  const ok = resp.ok && (json.code === undefined || json.code === 1000)
    && (json.error_code === undefined || json.error_code === 0);
  if (!ok) throw new ApiFailure(resp.status, code, json.msg ?? json.error_msg ?? '');
  return json;
}

// ---- 1. credentials -----------------------------------------------------------------------

$('token-form').addEventListener('submit', (ev) => ev.preventDefault());
$('key-form').addEventListener('submit', (ev) => ev.preventDefault());

action($('get-token'), async () => {
  const res = await call('POST', '/api/open/v3/getToken', {
    clientId: $('client-id').value.trim(),
    clientSecret: $('client-secret').value,
  }, { auth: false });
  const token = res.token ?? res.data?.token;
  state.auth = { kind: 'token', value: token };
  const exp = res.data?.expires_at ? new Date(res.data.expires_at * 1000).toISOString() : 'unknown';
  $('auth-state').textContent = `Signed in with a gateway token (expires ${exp}).`;
});

action($('use-key'), async () => {
  const key = $('api-key').value.trim();
  if (!key) throw new Error('enter an API key');
  state.auth = { kind: 'key', value: key };
  // Usage is the cheapest call that proves the key works.
  await call('GET', '/v1/usage');
  $('auth-state').textContent = 'Signed in with an API key.';
});

// ---- 2. detection -------------------------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('the browser cannot show this image'));
    img.src = url;
  });
}

// The upstream's `landmarks_str`: left eye, right eye, nose tip, and the mouth centre
// between the two mouth corners.
function optsFromLandmarks(points) {
  const [le, re, nose, ml, mr] = points;
  const mouth = [Math.floor((ml[0] + mr[0]) / 2), Math.floor((ml[1] + mr[1]) / 2)];
  return [le, re, nose, mouth].map(([x, y]) => `${x},${y}`).join(':');
}

function draw(img, det) {
  const canvas = $('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const line = Math.max(3, Math.round(canvas.width / 100));
  ctx.lineWidth = line;
  ctx.strokeStyle = BOX_COLOUR;
  const regions = det.region || [];
  for (const [x, y, w, h] of regions) ctx.strokeRect(x, y, w, h);
  ctx.fillStyle = LANDMARK_COLOUR;
  for (const face of det.landmarks || []) {
    for (const [x, y] of face) {
      ctx.beginPath();
      ctx.arc(x, y, line, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  canvas.dataset.faces = String(regions.length);
  canvas.setAttribute('aria-label', `The photo with ${regions.length} detected face(s) outlined`);
}

$('photo').addEventListener('change', async () => {
  clearError();
  const file = $('photo').files[0];
  if (!file) return;
  $('detect-state').textContent = 'Detecting…';
  try {
    const [dataUrl, img] = await Promise.all([
      readAsDataUrl(file),
      loadImage(URL.createObjectURL(file)),
    ]);
    const base64 = dataUrl.slice(dataUrl.indexOf(',') + 1);
    let det;
    try {
      det = await call('POST', '/detect', { single_face: true, img: base64, return_face_urls: true });
    } finally {
      URL.revokeObjectURL(img.src);
    }
    $('detect-json').textContent = JSON.stringify(det, null, 2);
    draw(img, det);
    const faces = (det.region || []).length;
    $('detect-state').textContent = `${faces} face(s) found in ${det.seconds ?? '?'} s.`;
    if (det.landmarks?.[0]) $('opts').value = optsFromLandmarks(det.landmarks[0]);
    // The upstream's own crop of the face is a URL it can fetch; any http(s) image works.
    if (det.face_urls?.[0] && !$('face-url').value) $('face-url').value = det.face_urls[0];
  } catch (err) {
    $('detect-state').textContent = 'Detection failed.';
    showError(err);
  }
});

// ---- 3. session, status over SSE ----------------------------------------------------------

function sourceImage() {
  const path = $('face-url').value.trim();
  const opts = $('opts').value.trim();
  if (!/^https?:\/\//i.test(path)) throw new Error('the face image URL must start with http:// or https://');
  if (!opts) throw new Error('detect a face first, or enter its landmarks');
  return [{ path, opts }];
}

function setStatus(status, note) {
  const name = STATUS_NAMES[status];
  $('status').textContent = status == null ? '—' : `${status} ${name ?? ''}${note ? ` — ${note}` : ''}`;
}

function showSession(s) {
  state.session = s;
  $('session-id').textContent = s._id;
  setStatus(s.faceswap_status, s.state === 'closed' ? `closed (${s.close_reason ?? ''})` : '');
  $('app-id').textContent = s.app_id ?? '—';
  $('channel-id').textContent = s.channel_id ?? '—';
  $('front-user-id').textContent = s.front_user_id ?? '—';
  $('front-rtc-token').textContent = s.front_rtc_token ?? '—';
  $('agora-snippet').textContent = [
    '// Agora Web SDK 4.x',
    `const client = AgoraRTC.createClient({ mode: 'live', codec: 'vp8' });`,
    `await client.join(${JSON.stringify(s.app_id ?? '')}, ${JSON.stringify(s.channel_id ?? '')},`,
    `  ${JSON.stringify(s.front_rtc_token ?? '')}, ${JSON.stringify(s.front_user_id ?? '')});`,
    `const video = await AgoraRTC.createCameraVideoTrack({`,
    `  encoderConfig: { width: 640, height: 480, frameRate: 20, bitrateMax: 1000 } });`,
    `const audio = await AgoraRTC.createMicrophoneAudioTrack({ encoderConfig: 'music_standard' });`,
  ].join('\n');
}

function logEvent(type, data) {
  const li = document.createElement('li');
  li.textContent = `${type}: ${JSON.stringify(data)}`;
  $('events').append(li);
}

function onEvent(type, message) {
  const d = message.data || {};
  if (!state.session || d._id !== state.session._id) return;
  logEvent(type, d);
  if (type === 'session.status_changed') {
    state.session.faceswap_status = d.faceswap_status;
    setStatus(d.faceswap_status, d.faceswap_status === 2 ? 'join the Agora channel now' : '');
  } else if (type === 'session.closed' || type === 'session.lost') {
    state.session.state = 'closed';
    setStatus(d.faceswap_status, `closed (${d.reason ?? type})`);
    stopStream();
  }
  refreshButtons();
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

// EventSource cannot send an Authorization header, so the stream is read with fetch and
// parsed here. A dropped stream resumes after the last event seen (Last-Event-ID).
async function follow(sessionId) {
  stopStream();
  const ctl = new AbortController();
  state.stream = ctl;
  let lastId = null;
  while (!ctl.signal.aborted) {
    try {
      const headers = authHeaders();
      if (lastId) headers['last-event-id'] = lastId;
      const resp = await fetch(
        `/v1/events?session_id=${encodeURIComponent(sessionId)}&from=start`,
        { headers, signal: ctl.signal },
      );
      if (!resp.ok) {
        const env = await resp.json().catch(() => ({}));
        throw new ApiFailure(resp.status, env.code, env.msg ?? 'the event stream was refused');
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let ev = { id: null, type: 'message', data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (ev.id) lastId = ev.id;
            if (ev.data.length) onEvent(ev.type, JSON.parse(ev.data.join('\n')));
            ev = { id: null, type: 'message', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') ev.data.push(val);
          else if (field === 'event') ev.type = val;
          else if (field === 'id') ev.id = val;
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) return;
      if (err instanceof ApiFailure) {
        showError(err);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

action($('create'), async () => {
  const res = await call('POST', '/api/open/v3/faceswap/live/create', { sourceImage: sourceImage() });
  $('events').replaceChildren();
  showSession(res.data);
  follow(res.data._id);
});

action($('update'), async () => {
  const res = await call('POST', '/api/open/v3/faceswap/live/update', {
    _id: state.session._id,
    sourceImage: sourceImage(),
  });
  showSession({ ...state.session, ...res.data });
  logEvent('updated', { sourceImage: res.data?.sourceImage });
});

action($('close'), async () => {
  const res = await call('POST', '/api/open/v3/faceswap/live/close', { _id: state.session._id });
  stopStream();
  showSession({ ...state.session, ...res.data });
});

function refreshButtons() {
  const open = state.session && state.session.state !== 'closed';
  $('update').disabled = !open;
  $('close').disabled = !open;
}

// ---- 5. past sessions ---------------------------------------------------------------------

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

// Archived bytes need the tenant's credentials, so a plain link cannot fetch them.
async function download(resource) {
  const resp = await fetch(resource.href, { headers: authHeaders() });
  if (!resp.ok) {
    const env = await resp.json().catch(() => ({}));
    throw new ApiFailure(resp.status, env.code, env.msg ?? 'download failed');
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = resource.resource_id;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function resourcesCell(resources) {
  const td = document.createElement('td');
  if (!resources.length) td.textContent = 'none';
  for (const r of resources) {
    const line = document.createElement('div');
    line.textContent = `${r.kind}: ${r.state}${r.size != null ? `, ${r.size} B` : ''} `;
    if (r.href) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `Download ${r.kind}`;
      b.addEventListener('click', () => download(r).catch(showError));
      line.append(b);
    }
    td.append(line);
  }
  return td;
}

action($('list-sessions'), async () => {
  const page = await call('GET', '/v1/sessions?limit=20');
  const rows = await Promise.all(page.data.sessions.map(async (s) => {
    const res = await call('GET', `/v1/sessions/${encodeURIComponent(s._id)}/resources`);
    const tr = document.createElement('tr');
    tr.append(
      cell(s._id),
      cell(s.state + (s.close_reason ? ` (${s.close_reason})` : '')),
      cell(s.faceswap_status == null ? '—' : `${s.faceswap_status} ${STATUS_NAMES[s.faceswap_status] ?? ''}`),
      cell(new Date(s.created_at * 1000).toISOString()),
      resourcesCell(res.data.resources),
    );
    return tr;
  }));
  $('sessions').tBodies[0].replaceChildren(...rows);
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = cell('No sessions yet.');
    td.colSpan = 5;
    tr.append(td);
    $('sessions').tBodies[0].append(tr);
  }
});

// Set last: the page is usable (and its tests may start) once every handler is attached.
$('auth-state').textContent = 'Not signed in.';
