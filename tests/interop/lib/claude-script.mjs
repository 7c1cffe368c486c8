// Scripted answers for Claude Code through x402d (checks/claude.mjs). Claude Code always offers its own tools
// (Bash among them), so the seller's generic "first tool" call would not make a readable session. Instead, for a
// request that offers a `Bash` function tool:
//   - the last message is a tool result            -> text "tool said: <first line of the result>", finish stop
//   - the last line of the last user message is
//     "RUN: <command>"                             -> a Bash tool call {command, description}, finish tool_calls
//   - otherwise                                    -> text "echo: <last line of the last user message>"
// Claude Code prepends <system-reminder> text to the user's prompt; x402d joins text blocks with "\n", so the
// prompt is the last line. Deterministic: checks recompute the expected output from the prompt.
import crypto from "node:crypto";

const lastLine = (s) => String(s ?? "").trimEnd().split("\n").at(-1) ?? "";
const text = (c) => (typeof c === "string" ? c : Array.isArray(c) ? c.map((p) => p?.text || "").join("\n") : "");

/** Returns { message, finish } for a Claude Code request, or null for any other request. */
export function claudeScripted(body) {
  const tools = Array.isArray(body?.tools) ? body.tools : [];
  if (!tools.some((t) => t?.function?.name === "Bash")) return null;
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  const last = msgs.at(-1);
  if (last?.role === "tool") {
    return { message: { role: "assistant", content: `tool said: ${lastLine(text(last.content).split("\n")[0])}`, refusal: null }, finish: "stop" };
  }
  const prompt = lastLine(text([...msgs].reverse().find((m) => m?.role === "user")?.content));
  const run = /^RUN: (.+)$/.exec(prompt);
  if (run) {
    const id = "call_" + crypto.createHash("sha256").update(run[1]).digest("hex").slice(0, 24);
    const args = JSON.stringify({ command: run[1], description: "interop tool turn" });
    return { message: { role: "assistant", content: null, refusal: null,
      tool_calls: [{ id, type: "function", function: { name: "Bash", arguments: args } }] }, finish: "tool_calls" };
  }
  return { message: { role: "assistant", content: `echo: ${prompt}`, refusal: null }, finish: "stop" };
}
