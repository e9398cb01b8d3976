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

// A person picker (templates/_person_picker.html): what is typed asks
// GET /api/people?q=... (named people first, then unnamed by size); the arrow keys
// and Enter, or a click, choose one, whose id the input keeps in data-person-id.
const PICKER_SHOWN = 20;

function setUpPicker(input) {
  const list = document.getElementById(input.getAttribute("aria-controls"));
  let found = [];
  let active = -1;
  let asked = 0;
  let timer = null;
  const close = () => {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  };
  const highlight = (index) => {
    active = index;
    [...list.querySelectorAll("[role=option]")].forEach((option, i) => {
      option.setAttribute("aria-selected", String(i === index));
      if (i === index) {
        input.setAttribute("aria-activedescendant", option.id);
        option.scrollIntoView({ block: "nearest" });
      }
    });
  };
  const choose = (person) => {
    input.value = person.label;
    input.dataset.personId = String(person.id);
    input.dataset.label = person.label;
    input.dataset.counts = `${person.faces} face${person.faces === 1 ? "" : "s"}, ` +
      `${person.photos} photo${person.photos === 1 ? "" : "s"}`;
    input.dataset.coverUrl = person.cover_url || "";
    close();
    input.dispatchEvent(new Event("picked"));
  };
  const show = () => {
    list.replaceChildren();
    found.forEach((person, i) => {
      const option = document.createElement("li");
      option.id = `${input.id}-option-${i}`;
      option.setAttribute("role", "option");
      option.dataset.personId = String(person.id);
      option.textContent = `${person.label} (${person.faces})`;
      option.addEventListener("mousedown", (event) => event.preventDefault()); // keep focus
      option.addEventListener("click", () => choose(person));
      list.append(option);
    });
    if (!found.length) {
      const none = document.createElement("li");
      none.className = "muted none";
      none.textContent = input.value.trim() ? `No one called “${input.value.trim()}”` : "No one yet";
      list.append(none);
    }
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    highlight(found.length ? 0 : -1);
  };
  const search = async () => {
    const mine = ++asked;
    const query = new URLSearchParams({ limit: String(PICKER_SHOWN + 1) });
    if (input.value.trim()) query.set("q", input.value.trim());
    try {
      const response = await fetch("/api/people?" + query);
      if (!response.ok) throw new Error(`the people did not load (${response.status})`);
      const people = await response.json();
      if (mine !== asked) return; // a later keystroke asked again
      found = people.filter((p) => String(p.id) !== input.dataset.exclude).slice(0, PICKER_SHOWN);
      show();
    } catch (error) {
      showError(error.message);
    }
  };
  input.addEventListener("input", () => {
    delete input.dataset.personId;
    clearTimeout(timer);
    timer = setTimeout(search, 120);
  });
  input.addEventListener("focus", () => { if (!input.dataset.personId) search(); });
  input.addEventListener("blur", () => setTimeout(close, 150));
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (list.hidden) { search(); return; }
      const step = event.key === "ArrowDown" ? 1 : -1;
      if (found.length) highlight((active + step + found.length) % found.length);
    } else if (event.key === "Enter") {
      if (!list.hidden && active >= 0) {
        event.preventDefault();
        choose(found[active]);
      }
    } else if (event.key === "Escape" && !list.hidden) {
      event.preventDefault();
      close();
    }
  });
}

// The person a picker holds, or null (and an error saying how to choose one).
function pickedPerson(id) {
  const input = document.getElementById(id);
  if (!input.dataset.personId) {
    showError("Choose a person first: type part of their name, then pick them from the list.");
    input.focus();
    return null;
  }
  return Number(input.dataset.personId);
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
  // Delegated: the faces "Show more faces" adds are selectable too.
  document.addEventListener("change", (event) => {
    if (event.target.matches("input.pick")) showSelection();
  });
  for (const input of document.querySelectorAll("input.picker-input")) setUpPicker(input);
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
    const target = pickedPerson("move-target");
    if (target === null) return;
    change(() => postJson("/api/people/move", { faces, target }));
  });
  on("split-button", () => {
    const faces = needSelection();
    if (!faces.length) return;
    const name = document.getElementById("split-name").value.trim();
    change(() => postJson(`/api/people/${personId}/split`, { faces, name: name || null }));
  });
  on("confirm-button", () => {
    const faces = needSelection();
    if (!faces.length) return;
    change(() => postJson(`/api/people/${personId}/confirm`, { faces }));
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
    const target = pickedPerson("loose-target");
    if (target === null) return;
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
    const source = pickedPerson("merge-source");
    if (source === null) return;
    const chosen = document.getElementById("merge-source").dataset;
    const other = document.getElementById("merge-other");
    const picture = other.querySelector("img");
    picture.alt = chosen.label;
    picture.hidden = !chosen.coverUrl;
    if (chosen.coverUrl) picture.src = chosen.coverUrl;
    other.querySelector(".label").textContent = chosen.label;
    other.querySelector(".counts").textContent = chosen.counts;
    dialog.querySelector(".other-label").textContent = chosen.label;
    dialog.dataset.source = String(source);
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

// A person's faces come a part at a time: "Show more faces" appends the next
// photos (GET /people/{id}/more); what was selected stays selected, and the
// toolbar's actions take every selected face. Without scripts the link opens the
// page with more faces shown.
function setUpMoreFaces() {
  const link = document.getElementById("show-more-faces");
  if (!link) return;
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ offset: link.dataset.offset });
    try {
      const response = await fetch(`/people/${link.dataset.personId}/more?` + query);
      if (!response.ok) throw new Error(`the next faces did not load (${response.status})`);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const list = page.querySelector("ul.more-photos");
      const grid = document.getElementById("person-photos");
      const first = list.querySelector("input.pick");
      for (const photo of [...list.querySelectorAll("li.photo")]) grid.append(photo);
      const end = Number(list.dataset.end);
      const total = Number(list.dataset.total);
      link.dataset.offset = String(end);
      document.getElementById("faces-shown").textContent =
        `${end} of ${total} face${total === 1 ? "" : "s"} shown`;
      if (end >= total) link.hidden = true;
      // Keyboard users go on from the first face added.
      if (first) document.querySelector(`input.pick[value="${first.value}"]`).focus();
      showSelection();
    } catch (error) {
      showError(error.message);
    }
  });
}

// The status page's "Watching the photo folders" (serve --watch): GET /api/watch
// every few seconds, shown as the page first rendered it.
function setUpWatchStatus() {
  const section = document.getElementById("watch");
  if (!section) return;
  const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
  const cell = (text, className) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  };
  const show = (watch) => {
    section.dataset.state = watch.state;
    const summary = document.getElementById("watch-summary");
    summary.querySelector(".watch-state").textContent = watch.state;
    summary.querySelector(".watch-since").textContent = watch.state_since;
    summary.querySelector(".watch-rest").textContent =
      `; ${plural(watch.queued, "changed file")} waiting, ` +
      `${plural(watch.updates, "update")} since ${watch.started_at}.`;
    const error = document.getElementById("watch-error");
    error.hidden = !watch.last_error;
    if (watch.last_error) error.textContent = `${watch.last_error.message} (${watch.last_error.at})`;
    const table = document.getElementById("watch-files");
    const head = table.querySelector("tr");
    table.replaceChildren(head);
    for (const file of watch.last_files) {
      const row = document.createElement("tr");
      row.append(cell(file.path, "path"), cell(file.at), cell(file.error || "updated"));
      table.append(row);
    }
    table.hidden = !watch.last_files.length;
  };
  const poll = async () => {
    try {
      const response = await fetch("/api/watch");
      if (response.ok) show(await response.json());
    } catch (error) {
      // the server restarting: the next poll tries again
    }
    setTimeout(poll, 3000);
  };
  setTimeout(poll, 3000);
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
  setUpMoreFaces();
  setUpWatchStatus();
  setUpDropzone();
  setUpToken();
  setUpIndexForm();
  setUpPeopleForms();
  unlockEditing();
});
