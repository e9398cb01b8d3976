// facevec's pages: drag and drop a photo, the editing token, index job progress,
// and the people pages' actions.
"use strict";

const TOKEN_KEY = "facevec-token";

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// Writes carry the token in a header, never a cookie: another site's page cannot
// make the browser send it (see facevec/web/security.py).
async function write(url, options) {
  const headers = Object.assign({ "Authorization": "Bearer " + token() }, options.headers || {});
  const response = await fetch(url, Object.assign({}, options, { headers }));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || response.statusText);
  }
  return body;
}

function showError(message) {
  let box = document.getElementById("error");
  if (!box) {
    box = document.createElement("p");
    box.id = "error";
    box.className = "error";
    box.setAttribute("role", "alert");
    document.querySelector("main").prepend(box);
  }
  box.textContent = message;
}

function setUpDropzone() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("photo-input");
  const form = document.getElementById("search-form");
  if (!zone || !input || !form) return;
  const submit = () => {
    document.getElementById("photo-name").textContent = input.files[0] ? input.files[0].name + " …" : "";
    form.requestSubmit();
  };
  input.addEventListener("change", () => { if (input.files.length) submit(); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      submit();
    }
  });
}

function setUpToken() {
  const form = document.getElementById("token-form");
  if (!form) return;
  const state = document.getElementById("token-state");
  const show = () => {
    state.textContent = token() ? "editing on" : "read-only";
    document.body.classList.toggle("editing", Boolean(token()));
    unlockEditing();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token-input");
    sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    show();
  });
  show();
}

function setUpIndexForm() {
  const form = document.getElementById("index-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const job = await write("/api/index", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ folder: data.get("folder"), prune: data.get("prune") === "true" }),
      });
      followJob(job);
    } catch (error) {
      showError(error.message);
    }
  });
}

// The people pages: every button calls an endpoint, then the page reloads to show
// the result. Edit controls sit in <fieldset data-edit disabled>: enabled only
// once a token is entered on a server that takes changes.
function unlockEditing() {
  const open =
    document.body.dataset.writable === "true" && Boolean(token()) && !document.body.dataset.runningJob;
  for (const fieldset of document.querySelectorAll("fieldset[data-edit]")) {
    fieldset.disabled = !open;
  }
  const indexButton = document.querySelector("#index-form button");
  if (indexButton) indexButton.disabled = Boolean(document.body.dataset.runningJob);
  for (const note of document.querySelectorAll(".locked-note")) {
    note.hidden = open;
  }
}

function postJson(url, body) {
  return write(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body === undefined ? {} : body),
  });
}

function selectedFaces() {
  return [...document.querySelectorAll("input.pick:checked")].map((box) => Number(box.value));
}

function showSelection() {
  const count = selectedFaces().length;
  for (const label of document.querySelectorAll(".selected-count")) {
    label.textContent = `${count} selected`;
  }
  for (const box of document.querySelectorAll("input.pick")) {
    box.closest("label").classList.toggle("picked", box.checked);
  }
}

// Run a change, say what it did, reload. The summary stays visible after the
// reload (sessionStorage), so a user sees what happened and that undo exists.
async function change(run) {
  try {
    const done = await run();
    if (done && done.summary) sessionStorage.setItem("facevec-last-change", done.summary);
    window.location.reload();
  } catch (error) {
    showError(error.message);
  }
}

function on(id, handler) {
  const element = document.getElementById(id);
  if (element) element.addEventListener("click", handler);
}

function needSelection() {
  const faces = selectedFaces();
  if (!faces.length) showError("Select one or more faces first.");
  return faces;
}

function setUpPeopleForms() {
  const state = document.getElementById("action-state");
  const last = sessionStorage.getItem("facevec-last-change");
  if (state && last) {
    state.textContent = `Done: ${last}.`;
    sessionStorage.removeItem("facevec-last-change");
  }
  for (const box of document.querySelectorAll("input.pick")) {
    box.addEventListener("change", showSelection);
  }
  const heading = document.getElementById("person-name");
  const personId = heading ? Number(heading.dataset.personId) : null;

  const nameForm = document.getElementById("name-form");
  if (nameForm) {
    nameForm.addEventListener("submit", (event) => {
      event.preventDefault();
      change(() => postJson(`/api/people/${personId}/name`, { name: document.getElementById("name-input").value }));
    });
  }
  on("hide-button", (event) => {
    const hidden = event.target.dataset.hidden === "true";
    change(() => postJson(`/api/people/${personId}/hide`, { hidden }));
  });
  on("undo-button", () => change(() => postJson("/api/people/undo")));
  on("group-faces", async () => {
    try {
      const job = await postJson("/api/people/cluster");
      followJob(job);
    } catch (error) {
      showError(error.message);
    }
  });

  // Faces of a person, selected.
  on("move-button", () => {
    const faces = needSelection();
    if (!faces.length) return;
    const target = Number(document.getElementById("move-target").value);
    change(() => postJson("/api/people/move", { faces, target }));
  });
  on("split-button", () => {
    const faces = needSelection();
    if (!faces.length) return;
    const name = document.getElementById("split-name").value.trim();
    change(() => postJson(`/api/people/${personId}/split`, { faces, name: name || null }));
  });
  on("reject-button", () => {
    const faces = needSelection();
    if (!faces.length) return;
    change(() => postJson("/api/people/reject", { faces, person: personId }));
  });
  on("cover-button", () => {
    const faces = needSelection();
    if (faces.length !== 1) {
      showError("Select the one face that should stand for this person.");
      return;
    }
    change(() => postJson(`/api/people/${personId}/cover`, { face_id: faces[0] }));
  });

  // Suggestions: "Is this Ann?"
  for (const button of document.querySelectorAll(".confirm-yes")) {
    button.addEventListener("click", () =>
      change(() => postJson(`/api/people/${personId}/confirm`, { faces: [Number(button.dataset.faceId)] }))
    );
  }
  for (const button of document.querySelectorAll(".confirm-no")) {
    button.addEventListener("click", () =>
      change(() => postJson("/api/people/reject", { faces: [Number(button.dataset.faceId)], person: personId }))
    );
  }

  // Faces of no one.
  on("loose-new", () => {
    const faces = needSelection();
    if (!faces.length) return;
    const name = document.getElementById("loose-name").value.trim();
    change(() => postJson("/api/people", { faces, name: name || null }));
  });
  on("loose-assign", () => {
    const faces = needSelection();
    if (!faces.length) return;
    const target = Number(document.getElementById("loose-target").value);
    change(() => postJson("/api/people/move", { faces, target }));
  });
  on("loose-dismiss", () => {
    const faces = needSelection();
    if (!faces.length) return;
    change(() => postJson("/api/people/dismiss", { faces }));
  });

  // Merge: only after a dialog that shows both people side by side.
  const dialog = document.getElementById("merge-dialog");
  on("merge-button", () => {
    const option = document.getElementById("merge-source").selectedOptions[0];
    const other = document.getElementById("merge-other");
    const picture = other.querySelector("img");
    picture.hidden = true;
    picture.alt = option.dataset.label;
    fetch(`/api/people/${option.value}`)
      .then((response) => response.json())
      .then((shown) => {
        if (shown.person && shown.person.cover_url && dialog.dataset.source === option.value) {
          picture.src = shown.person.cover_url;
          picture.hidden = false;
        }
      });
    other.querySelector(".label").textContent = option.dataset.label;
    other.querySelector(".counts").textContent = option.dataset.counts;
    dialog.querySelector(".other-label").textContent = option.dataset.label;
    dialog.dataset.source = option.value;
    dialog.showModal();
  });
  on("merge-cancel", () => dialog.close());
  on("merge-confirm", () => {
    dialog.close();
    change(() => postJson("/api/people/merge", { sources: [Number(dialog.dataset.source)], target: personId }));
  });
}

// The people list comes a page at a time: "Show more people" appends the next
// cards (GET /people/more), each to its section (named or not). Without scripts
// the link opens the list with more people shown.
function setUpShowMore() {
  const link = document.getElementById("show-more");
  if (!link) return;
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ offset: link.dataset.offset, hidden: link.dataset.hidden });
    try {
      const response = await fetch("/people/more?" + query);
      if (!response.ok) throw new Error(`the next people did not load (${response.status})`);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const list = page.querySelector("ul.more-people");
      for (const card of list.querySelectorAll("li.person")) {
        const section = card.dataset.named === "true" ? "named-people" : "unnamed-people";
        document.querySelector(`#${section} ul.people-grid`).append(card);
      }
      const end = Number(list.dataset.end);
      const total = Number(list.dataset.total);
      link.dataset.offset = String(end);
      document.getElementById("people-shown").textContent = `${end} of ${total} shown`;
      if (end >= total) link.hidden = true;
    } catch (error) {
      showError(error.message);
    }
  });
}

// A job (indexing, grouping faces) runs in the background: while it does, the edit
// controls are locked and the page shows how far it is; when it ends, the page
// reloads to show what it did (a clustering run's report stays in view).
function describeJob(job) {
  const total = job.total ?? "?";
  if (job.kind === "cluster") return `Grouping faces: ${job.done} of ${total} compared`;
  return `Indexing ${job.folder}: ${job.done} of ${total} files`;
}

async function followJob(job) {
  const box = document.getElementById("running-job");
  const bar = box.querySelector("progress");
  document.body.dataset.runningJob = job.id;
  unlockEditing();
  box.hidden = false;
  while (job.state === "queued" || job.state === "running") {
    box.querySelector(".what").textContent = describeJob(job);
    if (job.total) {
      bar.max = job.total;
      bar.value = job.done;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const response = await fetch("/api/jobs/" + job.id);
    if (!response.ok) break;
    job = await response.json();
  }
  box.hidden = true;
  document.body.dataset.runningJob = "";
  if (job.state === "failed") {
    showError(`${job.kind} job failed: ${job.error}`);
    unlockEditing();
    return;
  }
  if (job.kind === "cluster" && job.report) {
    const report = job.report;
    sessionStorage.setItem(
      "facevec-last-change",
      `grouped ${report.unassigned} faces: ${report.joined_existing} joined people, ` +
        `${report.new_people} new people, ${report.left_unassigned} left with no one`
    );
  }
  window.location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  const running = document.body.dataset.runningJob;
  if (running) {
    fetch("/api/jobs/" + running).then((response) => response.json()).then(followJob);
  }
  setUpShowMore();
  setUpDropzone();
  setUpToken();
  setUpIndexForm();
  setUpPeopleForms();
  unlockEditing();
});
