// The message composer: text (Enter sends, Shift+Enter breaks the line), an image or a video.

import { embedUrl, webUrl } from "./content.js";
import { byId } from "./dom.js";

// Wires the composer; `send(content)` gets the content of each message. Returns an undo function.
export function setUpComposer(send) {
  const form = byId("composer");
  const kind = byId("kind");
  const text = byId("message-text");
  const error = byId("composer-error");

  const onKind = () => {
    byId("text-fields").hidden = kind.value !== "text";
    byId("image-fields").hidden = kind.value !== "image";
    byId("video-fields").hidden = kind.value !== "video";
    error.textContent = "";
  };
  const onKey = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  };
  const onVideoUrl = () => {
    const url = byId("video-url").value;
    if (/vimeo\.com/i.test(url)) byId("video-source").value = "vimeo";
    else if (embedUrl(url)) byId("video-source").value = "youtube";
  };
  const onSubmit = (event) => {
    event.preventDefault();
    const { content, problem } = read(kind.value);
    error.textContent = problem ?? "";
    if (!content) return;
    clear();
    send(content);
  };

  form.addEventListener("submit", onSubmit);
  kind.addEventListener("change", onKind);
  text.addEventListener("keydown", onKey);
  byId("video-url").addEventListener("input", onVideoUrl);
  return () => {
    form.removeEventListener("submit", onSubmit);
    kind.removeEventListener("change", onKind);
    text.removeEventListener("keydown", onKey);
    byId("video-url").removeEventListener("input", onVideoUrl);
    form.reset();
    onKind();
  };
}

function read(kind) {
  if (kind === "text") {
    const text = byId("message-text").value;
    return text.trim() ? { content: { type: "text", text } } : { problem: null };
  }
  const url = byId(`${kind}-url`).value.trim();
  if (!url) return { problem: `Enter the ${kind}'s URL.` };
  if (!webUrl(url)) return { problem: "Enter a URL starting with https:// or http://." };
  if (kind === "image") {
    const width = Number(byId("image-width").value || 64);
    const height = Number(byId("image-height").value || 64);
    const valid = (n) => Number.isInteger(n) && n >= 1 && n <= 32767;
    if (!valid(width) || !valid(height)) return { problem: "Width and height are whole numbers from 1 to 32767." };
    return { content: { type: "image", url, width, height } };
  }
  return { content: { type: "video", url, source: byId("video-source").value } };
}

function clear() {
  byId("message-text").value = "";
  byId("image-url").value = "";
  byId("video-url").value = "";
}
