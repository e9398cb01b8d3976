// facevec's pages: drag and drop a photo, the editing token, index job progress.
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
  const state = document.getElementById("job-state");
  const bar = document.getElementById("job-progress");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      let job = await write("/api/index", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ folder: data.get("folder"), prune: data.get("prune") === "true" }),
      });
      bar.hidden = false;
      while (job.state === "queued" || job.state === "running") {
        state.textContent = `indexing ${job.folder}: ${job.done} of ${job.total ?? "?"} files`;
        if (job.total) { bar.max = job.total; bar.value = job.done; }
        await new Promise((resolve) => setTimeout(resolve, 1000));
        job = await (await fetch("/api/jobs/" + job.id)).json();
      }
      bar.hidden = true;
      state.textContent = job.state === "failed" ? `failed: ${job.error}` : `${job.state}: ${job.done} files`;
      if (job.state !== "failed") window.location.reload();
    } catch (error) {
      showError(error.message);
    }
  });
}

function setUpPeopleForms() {
  const nameForm = document.getElementById("name-form");
  if (nameForm) {
    nameForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const id = nameForm.dataset.personId;
      try {
        await write(`/api/people/${id}/name`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name: document.getElementById("name-input").value }),
        });
        window.location.reload();
      } catch (error) {
        showError(error.message);
      }
    });
  }
  const mergeForm = document.getElementById("merge-form");
  if (mergeForm) {
    mergeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const target = Number(mergeForm.dataset.personId);
      const source = Number(document.getElementById("merge-source").value);
      try {
        await write("/api/people/merge", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ sources: [source], target }),
        });
        window.location.reload();
      } catch (error) {
        showError(error.message);
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDropzone();
  setUpToken();
  setUpIndexForm();
  setUpPeopleForms();
});
