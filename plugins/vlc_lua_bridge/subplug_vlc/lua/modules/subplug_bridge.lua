-- subplug_bridge: everything the VLC side of subplug does, shared by the
-- "Generate EN/MN subtitles" extension (subplug.lua) and the headless interface
-- script (subplug_intf.lua).
--
-- subplug-version: __SUBPLUG_VERSION__
--
-- The engine runs as a separate process (`subplug generate --jsonl`, contract in
-- docs/jsonl.md). It is started in the background with its JSON lines going to a
-- file that this module polls, so a long job never blocks VLC, the progress dialog
-- keeps updating and the job can be stopped at any time.
--
-- Works on VLC 3 (vlc.input, vlc.var "spu-es") and VLC 4 (vlc.player).

local M = {}

M.VERSION = "__SUBPLUG_VERSION__"
M.JSONL_VERSION = 1
M.LANGUAGES = { "en", "mn" }

-- ---------------------------------------------------------------- small helpers

local function is_windows()
    return package.config:sub(1, 1) == "\\"
end
M.is_windows = is_windows

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
M.trim = trim

local function split(s, sep)
    local out = {}
    for part in (s .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do
        out[#out + 1] = part
    end
    return out
end
M.split = split

-- ------------------------------------------------------------------------ JSON
-- A small reader for the JSON lines subplug prints (objects, arrays, strings with
-- every escape incl. \u surrogate pairs, numbers, true/false/null) and a writer
-- for the reports the headless script prints. `null` becomes nil.

local function utf8_char(cp)
    if cp < 0x80 then
        return string.char(cp)
    elseif cp < 0x800 then
        return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
        return string.char(
            0xE0 + math.floor(cp / 0x1000),
            0x80 + math.floor(cp / 0x40) % 0x40,
            0x80 + cp % 0x40
        )
    end
    return string.char(
        0xF0 + math.floor(cp / 0x40000),
        0x80 + math.floor(cp / 0x1000) % 0x40,
        0x80 + math.floor(cp / 0x40) % 0x40,
        0x80 + cp % 0x40
    )
end
M.utf8_char = utf8_char

local JSON_ESCAPES = {
    ['"'] = '"', ["\\"] = "\\", ["/"] = "/",
    b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
}

--- Decode one JSON text. Returns the value, or nil and a message.
function M.json_decode(text)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    local pos = 1
    local function fail(message)
        error({ json = message .. " at character " .. pos }, 0)
    end
    local function skip()
        pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
    end
    local value

    local function string_value()
        pos = pos + 1
        local parts = {}
        while true do
            -- JSON forbids raw bytes 0-31 in strings; DEL (127) and the rest are text.
            local at = text:find('["\\\0-\31]', pos)
            if not at then
                fail("unterminated string")
            end
            parts[#parts + 1] = text:sub(pos, at - 1)
            local c = text:sub(at, at)
            if c == '"' then
                pos = at + 1
                return table.concat(parts)
            elseif c ~= "\\" then
                pos = at
                fail("control character in string")
            end
            local e = text:sub(at + 1, at + 1)
            if e == "u" then
                local hex = text:match("^%x%x%x%x", at + 2)
                if not hex then
                    pos = at
                    fail("bad \\u escape")
                end
                local cp = tonumber(hex, 16)
                pos = at + 6
                if cp >= 0xD800 and cp <= 0xDBFF then
                    local low = text:match("^\\u(%x%x%x%x)", pos)
                    low = low and tonumber(low, 16)
                    if low and low >= 0xDC00 and low <= 0xDFFF then
                        cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
                        pos = pos + 6
                    else
                        cp = 0xFFFD
                    end
                elseif cp >= 0xDC00 and cp <= 0xDFFF then
                    cp = 0xFFFD
                end
                parts[#parts + 1] = utf8_char(cp)
            elseif JSON_ESCAPES[e] then
                parts[#parts + 1] = JSON_ESCAPES[e]
                pos = at + 2
            else
                pos = at
                fail("bad escape")
            end
        end
    end

    local function number_value()
        local s, e = text:find("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
        if not s then
            fail("bad number")
        end
        local n = tonumber(text:sub(s, e))
        if not n then
            fail("bad number")
        end
        pos = e + 1
        return n
    end

    function value()
        skip()
        local c = text:sub(pos, pos)
        if c == "{" then
            pos = pos + 1
            local obj = {}
            skip()
            if text:sub(pos, pos) == "}" then
                pos = pos + 1
                return obj
            end
            while true do
                skip()
                if text:sub(pos, pos) ~= '"' then
                    fail("expected a key")
                end
                local key = string_value()
                skip()
                if text:sub(pos, pos) ~= ":" then
                    fail("expected ':'")
                end
                pos = pos + 1
                obj[key] = value()
                skip()
                c = text:sub(pos, pos)
                pos = pos + 1
                if c == "}" then
                    return obj
                elseif c ~= "," then
                    pos = pos - 1
                    fail("expected ',' or '}'")
                end
            end
        elseif c == "[" then
            pos = pos + 1
            local arr, n = {}, 0
            skip()
            if text:sub(pos, pos) == "]" then
                pos = pos + 1
                return arr
            end
            while true do
                n = n + 1
                arr[n] = value()
                skip()
                c = text:sub(pos, pos)
                pos = pos + 1
                if c == "]" then
                    return arr
                elseif c ~= "," then
                    pos = pos - 1
                    fail("expected ',' or ']'")
                end
            end
        elseif c == '"' then
            return string_value()
        elseif c == "-" or c:match("%d") then
            return number_value()
        elseif text:sub(pos, pos + 3) == "true" then
            pos = pos + 4
            return true
        elseif text:sub(pos, pos + 4) == "false" then
            pos = pos + 5
            return false
        elseif text:sub(pos, pos + 3) == "null" then
            pos = pos + 4
            return nil
        end
        fail(c == "" and "unexpected end" or "unexpected character")
    end

    local ok, result = pcall(function()
        local v = value()
        skip()
        if pos <= #text then
            fail("trailing characters")
        end
        return v
    end)
    if ok then
        return result
    end
    if type(result) == "table" and result.json then
        return nil, result.json
    end
    error(result, 0)
end

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
        return named[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
end

--- Encode a value as JSON (tables with only 1..n keys become arrays).
function M.json_encode(v)
    local t = type(v)
    if v == nil then
        return "null"
    elseif t == "boolean" then
        return tostring(v)
    elseif t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            return "null"
        end
        if v == math.floor(v) and math.abs(v) < 2 ^ 53 then
            return string.format("%d", v)
        end
        return string.format("%.17g", v)
    elseif t == "string" then
        return json_string(v)
    elseif t == "table" then
        local n = #v
        local count = 0
        for _ in pairs(v) do
            count = count + 1
        end
        local parts = {}
        if count > 0 and count == n then
            for i = 1, n do
                parts[i] = M.json_encode(v[i])
            end
            return "[" .. table.concat(parts, ",") .. "]"
        end
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = tostring(k)
        end
        table.sort(keys)
        for _, k in ipairs(keys) do
            local value = v[k]
            if value == nil then
                value = v[tonumber(k)]
            end
            parts[#parts + 1] = json_string(k) .. ":" .. M.json_encode(value)
        end
        return "{" .. table.concat(parts, ",") .. "}"
    end
    return json_string(tostring(v))
end

--- Splits a growing byte stream into complete lines (a partial last line waits).
function M.line_reader()
    local pending = ""
    return function(chunk)
        pending = pending .. (chunk or "")
        local lines = {}
        while true do
            local nl = pending:find("\n", 1, true)
            if not nl then
                break
            end
            local line = pending:sub(1, nl - 1):gsub("\r$", "")
            lines[#lines + 1] = line
            pending = pending:sub(nl + 1)
        end
        return lines
    end
end

-- --------------------------------------------------------------- URIs and paths

--- Percent-decode a URI component.
function M.percent_decode(s)
    return (s:gsub("%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
    end))
end

--- The local path of a file:// URI, or nil and a message for anything else.
-- `windows` defaults to the platform VLC runs on.
function M.uri_to_path(uri, windows)
    if windows == nil then
        windows = is_windows()
    end
    if type(uri) ~= "string" or uri == "" then
        return nil, "Nothing is playing. Open a video or audio file first."
    end
    local scheme = uri:match("^(%a[%w+.-]*):")
    if not scheme or (#scheme == 1 and windows) then
        -- Already a plain path (VLC 3 keeps some items as paths, e.g. "C:\\x.mp4").
        return uri
    end
    if scheme:lower() ~= "file" then
        return nil, "subplug works on local files only; this item is a '" .. scheme
            .. "' stream. Save it to a file, open the file in VLC and try again."
    end
    local rest = uri:sub(#scheme + 2)
    local host, path = rest:match("^//([^/]*)(.*)$")
    if not host then
        host, path = "", rest
    end
    path = M.percent_decode(path)
    host = M.percent_decode(host)
    if host:lower() == "localhost" then
        host = ""
    end
    if windows then
        if host ~= "" then
            return "\\\\" .. host .. path:gsub("/", "\\")
        end
        if path:match("^/%a:") or path:match("^/%a|") then
            path = path:sub(2, 2) .. ":" .. path:sub(4)
        end
        return (path:gsub("/", "\\"))
    end
    if host ~= "" then
        return nil, "The file is on another computer (" .. host .. "). Copy it to this computer first."
    end
    return path
end

--- Folder part of a path ("" when there is none).
function M.dirname(path)
    local dir = path:match("^(.*)[/\\][^/\\]*$")
    if dir == nil then
        return ""
    end
    if dir == "" then
        return path:sub(1, 1)
    end
    if dir:match("^%a:$") then
        return dir .. "\\"
    end
    return dir
end

--- Last part of a path.
function M.basename(path)
    return path:match("([^/\\]*)$")
end

--- File name without its last extension.
function M.stem(path)
    local name = M.basename(path)
    return name:match("^(.+)%.[^.]*$") or name
end

--- Join a folder and a name with the platform's separator.
function M.join(dir, name, windows)
    if windows == nil then
        windows = is_windows()
    end
    local sep = windows and "\\" or "/"
    if dir == "" then
        return name
    end
    if dir:sub(-1) == "/" or dir:sub(-1) == "\\" then
        return dir .. name
    end
    return dir .. sep .. name
end

-- ----------------------------------------------------------------------- quoting

--- One argument for a POSIX shell (sh, bash, zsh): safe for every byte string.
function M.quote_posix(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- One argument for a Windows command line as the C runtime (and Python) split it.
function M.quote_windows_arg(s)
    if s ~= "" and not s:find('[%s"]') then
        return s
    end
    local out = { '"' }
    local backslashes = 0
    for i = 1, #s do
        local c = s:sub(i, i)
        if c == "\\" then
            backslashes = backslashes + 1
        elseif c == '"' then
            out[#out + 1] = string.rep("\\", backslashes * 2 + 1) .. '"'
            backslashes = 0
        else
            out[#out + 1] = string.rep("\\", backslashes) .. c
            backslashes = 0
        end
    end
    out[#out + 1] = string.rep("\\", backslashes * 2) .. '"'
    return table.concat(out)
end

--- Escape a whole command line for one pass of cmd.exe: every metacharacter,
-- quotes included, gets a caret, so cmd never enters its quote mode and passes
-- the line through unchanged.
function M.cmd_escape(line)
    return (line:gsub('[%%()!^"<>&|]', "^%0"))
end

--- A PowerShell single-quoted string literal (quotes doubled, typographic ones too).
function M.powershell_literal(s)
    s = s:gsub("'", "''")
    for _, q in ipairs({ "\226\128\152", "\226\128\153", "\226\128\154", "\226\128\155" }) do
        s = s:gsub(q, q .. q)
    end
    return "'" .. s .. "'"
end

--- UTF-8 text to UTF-16LE bytes (invalid bytes become U+FFFD).
function M.utf16le(s)
    local out = {}
    local i = 1
    local function unit(u)
        out[#out + 1] = string.char(u % 256, math.floor(u / 256))
    end
    while i <= #s do
        local c = s:byte(i)
        local cp, len
        if c < 0x80 then
            cp, len = c, 1
        elseif c >= 0xF0 and c < 0xF8 then
            cp, len = c - 0xF0, 4
        elseif c >= 0xE0 then
            cp, len = c - 0xE0, 3
        elseif c >= 0xC0 then
            cp, len = c - 0xC0, 2
        else
            cp, len = 0xFFFD, 1
        end
        for k = 1, len - 1 do
            local b = s:byte(i + k)
            if not b or b < 0x80 or b >= 0xC0 then
                cp, len = 0xFFFD, 1
                break
            end
            cp = cp * 64 + (b - 0x80)
        end
        if cp >= 0x10000 then
            cp = cp - 0x10000
            unit(0xD800 + math.floor(cp / 0x400))
            unit(0xDC00 + cp % 0x400)
        else
            unit(cp)
        end
        i = i + len
    end
    return table.concat(out)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- Standard base64 (RFC 4648, with padding).
function M.base64(data)
    local out = {}
    for i = 1, #data, 3 do
        local a, b, c = data:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local chars = {}
        for k = 3, 0, -1 do
            local idx = math.floor(n / 64 ^ k) % 64 + 1
            chars[#chars + 1] = B64:sub(idx, idx)
        end
        if not b then
            chars[3], chars[4] = "=", "="
        elseif not c then
            chars[4] = "="
        end
        out[#out + 1] = table.concat(chars)
    end
    return table.concat(out)
end

-- ------------------------------------------------------------------ dialog text

--- `text` cut into lines of at most `width` characters (UTF-8 aware), at spaces where
-- possible; a longer word (a path) is cut where it must. VLC's dialog labels do not
-- wrap, so a long message would make the window wider than the screen.
function M.wrap(text, width)
    width = width or 60
    local lines = {}
    for paragraph in (tostring(text or "") .. "\n"):gmatch("(.-)\n") do
        local line, size = {}, 0
        local function flush()
            lines[#lines + 1] = table.concat(line, " ")
            line, size = {}, 0
        end
        for word in paragraph:gmatch("%S+") do
            local chars = {}
            for ch in word:gmatch("[^\128-\191][\128-\191]*") do
                chars[#chars + 1] = ch
            end
            while #chars > width do
                if size > 0 then
                    flush()
                end
                lines[#lines + 1] = table.concat(chars, "", 1, width)
                local rest = {}
                for i = width + 1, #chars do
                    rest[#rest + 1] = chars[i]
                end
                chars = rest
            end
            if #chars > 0 then
                if size > 0 and size + 1 + #chars > width then
                    flush()
                end
                line[#line + 1] = table.concat(chars)
                size = size + (size > 0 and 1 or 0) + #chars
            end
        end
        if size > 0 or #lines == 0 or paragraph == "" then
            flush()
        end
    end
    return lines
end

--- Where the extension's Settings dialog is, as hints say it.
M.SETTINGS_PLACE = "View > Generate EN/MN subtitles > Settings…"

local SETTING_FOR = {
    ["model-not-found"] = "Model", ["model-corrupt"] = "Model", ["not-a-model"] = "Model",
    ["unknown-model"] = "Model", ["invalid-model-name"] = "Model", ["base-model-missing"] = "Model",
    ["adapter-base-missing"] = "Model", ["bad-device"] = "Run on", ["no-cuda"] = "Run on",
    ["no-mps"] = "Run on", ["out-of-memory"] = "Run on", ["not-enough-memory"] = "Run on",
    ["no-speech"] = "Spoken language", ["no-text"] = "Spoken language",
}

--- The engine's hint for an error, plus where in the Settings dialog it can be fixed
-- (the engine's hints name commands, which a VLC user may not have at hand).
function M.vlc_hint(reference, hint)
    local setting = SETTING_FOR[reference or ""]
    if not setting then
        return hint
    end
    local place = "In VLC: " .. M.SETTINGS_PLACE .. " (" .. setting .. ")."
    if hint and hint ~= "" then
        return hint .. " " .. place
    end
    return place
end

-- ---------------------------------------------------------------------- settings

M.SETTING_KEYS = { "source", "model", "formats", "targets", "bottom", "device" }
M.SETTING_CHOICES = {
    source = { "auto", "en", "mn" },
    formats = { "ass,srt", "ass", "ass,srt,vtt" },
    targets = { "en,mn", "en", "mn" },
    bottom = { "mn", "en" },
    device = { "auto", "cpu", "cuda" },
}

function M.default_settings()
    return {
        source = "auto", model = "", formats = "ass,srt",
        targets = "en,mn", bottom = "mn", device = "auto",
    }
end

--- Settings from "key=value" lines; unknown keys and bad values are ignored.
function M.parse_settings(text)
    local settings = M.default_settings()
    for line in (text or ""):gmatch("[^\r\n]+") do
        local key, value = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
        if key and settings[key] ~= nil then
            local choices = M.SETTING_CHOICES[key]
            local allowed = choices == nil
            for _, c in ipairs(choices or {}) do
                allowed = allowed or c == value
            end
            if allowed then
                settings[key] = value
            end
        end
    end
    return settings
end

function M.format_settings(settings)
    local lines = { "# subplug settings for VLC (written by the extension's Settings dialog)" }
    for _, key in ipairs(M.SETTING_KEYS) do
        lines[#lines + 1] = key .. "=" .. (settings[key] or ""):gsub("[\r\n]", " ")
    end
    return table.concat(lines, "\n") .. "\n"
end

--- Where the settings live: VLC's user data folder.
function M.settings_path()
    return M.join(vlc.config.userdatadir(), "subplug-settings.txt")
end

function M.load_settings(path)
    path = path or M.settings_path()
    local f = io.open(path, "rb")
    if not f then
        return M.default_settings()
    end
    local text = f:read("*a")
    f:close()
    return M.parse_settings(text)
end

--- Write settings atomically (temp file, then rename). Returns true or nil, message.
function M.save_settings(settings, path)
    path = path or M.settings_path()
    local tmp = path .. ".tmp"
    local f, err = io.open(tmp, "wb")
    if not f then
        return nil, err
    end
    f:write(M.format_settings(settings))
    f:close()
    os.remove(path)
    local ok, rename_err = os.rename(tmp, path)
    if not ok then
        return nil, rename_err
    end
    return true
end

-- --------------------------------------------------------- how to run subplug

--- The install-time configuration written by `subplug install vlc`
-- (subplug_config.lua next to this module): the command that runs subplug,
-- extra environment variables and extra arguments.
function M.load_config()
    local ok, cfg = pcall(require, "subplug_config")
    if not ok or type(cfg) ~= "table" then
        cfg = {}
    end
    if type(cfg.command) ~= "table" or #cfg.command == 0 then
        cfg.command = { "subplug" }
    end
    cfg.env = cfg.env or {}
    cfg.extra_args = cfg.extra_args or {}
    return cfg
end

--- The argument list of the `subplug generate` run for `media`.
function M.generate_args(cfg, settings, media, out_dir, overwrite)
    local args = {}
    for _, a in ipairs(cfg.command) do
        args[#args + 1] = a
    end
    local function add(...)
        for _, a in ipairs({ ... }) do
            args[#args + 1] = a
        end
    end
    add("generate", "--jsonl", "--source", settings.source, "--targets", settings.targets,
        "--format", settings.formats, "--bottom", settings.bottom, "--device", settings.device)
    if settings.model and settings.model ~= "" then
        add("--model", settings.model)
    end
    if out_dir then
        add("--out", out_dir)
    end
    if overwrite then
        add("--overwrite")
    end
    for _, a in ipairs(cfg.extra_args) do
        add(a)
    end
    add(media)
    return args
end

local function sorted_env(env)
    local keys = {}
    for k in pairs(env) do
        if tostring(k):match("^[%a_][%w_]*$") then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys)
    return keys
end

--- The /bin/sh command that starts subplug in the background: its JSON lines go to
-- files.out, its messages to files.err, its pid to files.pid and, when it ends,
-- its exit status to files.rc.
function M.posix_launch_command(args, env, files)
    local q = M.quote_posix
    local words = {}
    for _, k in ipairs(sorted_env(env or {})) do
        words[#words + 1] = k .. "=" .. q(tostring(env[k]))
    end
    for _, a in ipairs(args) do
        words[#words + 1] = q(a)
    end
    local cmd = "env " .. table.concat(words, " ")
    return "( cd / && " .. cmd .. " >" .. q(files.out) .. " 2>" .. q(files.err)
        .. " </dev/null & echo $! >" .. q(files.pid .. ".tmp")
        .. " && mv " .. q(files.pid .. ".tmp") .. " " .. q(files.pid)
        .. "; wait $!; echo $? >" .. q(files.rc .. ".tmp")
        .. " && mv " .. q(files.rc .. ".tmp") .. " " .. q(files.rc)
        .. " ) >/dev/null 2>&1 </dev/null &"
end

--- The PowerShell script that does the same on Windows. Run through
-- -EncodedCommand, it needs no cmd.exe quoting and keeps non-ASCII paths intact.
function M.windows_launch_script(args, env, files)
    local lit = M.powershell_literal
    local parts = {}
    for _, k in ipairs(sorted_env(env or {})) do
        parts[#parts + 1] = "$env:" .. k .. " = " .. lit(tostring(env[k])) .. ";"
    end
    local rest = {}
    for i = 2, #args do
        rest[#rest + 1] = M.quote_windows_arg(args[i])
    end
    parts[#parts + 1] = "$p = Start-Process -FilePath " .. lit(args[1])
        .. " -ArgumentList " .. lit(table.concat(rest, " "))
        .. " -RedirectStandardOutput " .. lit(files.out)
        .. " -RedirectStandardError " .. lit(files.err)
        .. " -WindowStyle Hidden -PassThru;"
    parts[#parts + 1] = "Set-Content -LiteralPath " .. lit(files.pid) .. " -Value $p.Id;"
    parts[#parts + 1] = "$p.WaitForExit();"
    parts[#parts + 1] = "Set-Content -LiteralPath " .. lit(files.rc) .. " -Value $p.ExitCode"
    return table.concat(parts, " ")
end

function M.windows_launch_command(args, env, files)
    local script = M.windows_launch_script(args, env, files)
    return 'start "" /B powershell -NoProfile -NonInteractive -WindowStyle Hidden '
        .. "-EncodedCommand " .. M.base64(M.utf16le(script))
end

-- --------------------------------------------------------------- files on disk

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    return text
end
M.read_file = read_file

local function exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end
M.exists = exists

local counter = 0

--- A new private folder for one job's files, and the base name for them in it.
-- On Linux and macOS `mktemp -d` creates it with an unpredictable name and mode 0700,
-- so no other user can read, replace or race the files (os.tmpname() only names a
-- file in the shared /tmp, which is deleted and reused). On Windows the temporary
-- folder is the user's own. Returns the base name (files are base .. ".jsonl", …) and
-- the folder (removed by Job:cleanup), or nil and a message.
function M.temp_base()
    counter = counter + 1
    local stamp = string.format("subplug-%d-%d-%d", os.time(), math.floor(os.clock() * 1e6), counter)
    if is_windows() then
        return M.join(os.getenv("TEMP") or os.getenv("TMP") or "C:\\Windows\\Temp", stamp, true), nil
    end
    local pipe = io.popen("mktemp -d \"${TMPDIR:-/tmp}/subplug-vlc.XXXXXXXXXX\" 2>/dev/null")
    local folder = pipe and trim(pipe:read("*a") or "") or ""
    if pipe then
        pipe:close()
    end
    if folder == "" or not folder:match("^/") then
        return nil, "Could not create a private temporary folder (mktemp -d failed)."
    end
    return M.join(folder, "job"), folder
end

--- True when a file can be created in `dir`.
function M.writable_dir(dir)
    local probe = M.join(dir, string.format(".subplug-write-test-%d-%d", os.time(), counter))
    counter = counter + 1
    local f = io.open(probe, "wb")
    if not f then
        return false
    end
    f:close()
    os.remove(probe)
    return true
end

--- Where subtitles for `media` go: next to it when that folder is writable (VLC
-- then finds them by itself next time), else a subplug folder in VLC's cache.
-- Returns the folder and whether it is the fallback.
function M.output_dir(media, fallback_root)
    local dir = M.dirname(media)
    if dir ~= "" and M.writable_dir(dir) then
        return dir, false
    end
    fallback_root = fallback_root or M.cache_root()
    return M.join(fallback_root, "subplug"), true
end

function M.cache_root()
    if vlc and vlc.config then
        if vlc.config.cachedir then
            return vlc.config.cachedir()
        end
        return vlc.config.userdatadir()
    end
    return os.getenv("TEMP") or "/tmp"
end

--- The bilingual .ass file subplug writes for `media` in `dir`.
function M.expected_ass(media, dir, settings)
    local langs = split(settings.targets, ",")
    return M.join(dir, M.stem(media) .. "." .. table.concat(langs, "-") .. ".ass")
end

-- ----------------------------------------------------------------------- sleeping

--- True once VLC asked this script to stop (quit, extension deactivated).
M.interrupted = false

--- Wait `seconds`. Returns false (and sets M.interrupted) when VLC interrupts the
-- wait because it is shutting the script down; callers then stop what they do.
-- Once interrupted, VLC's wait returns at once, so later waits use the system's.
function M.sleep(seconds)
    if not M.interrupted and vlc and vlc.misc and vlc.misc.mwait and vlc.misc.mdate then
        -- VLC 3 and 4 raise "Interrupted." from mwait when the script must end.
        if pcall(vlc.misc.mwait, vlc.misc.mdate() + math.floor(seconds * 1000000)) then
            return true
        end
        M.interrupted = true
        return false
    end
    if not is_windows() then
        -- Whole milliseconds, written without "%f": VLC sets the user's locale,
        -- which may use a decimal comma that sleep(1) does not read.
        local ms = math.max(0, math.floor(seconds * 1000 + 0.5))
        os.execute(string.format("sleep %d.%03d", math.floor(ms / 1000), ms % 1000))
    else
        local deadline = os.clock() + seconds
        repeat
        until os.clock() >= deadline
    end
    return not M.interrupted
end

--- Whether VLC wants this script to end (VLC 2 and 4 have should_die; VLC 3
-- signals it through an interrupted wait, see M.sleep).
function M.should_die()
    if M.interrupted then
        return true
    end
    if vlc and vlc.misc and vlc.misc.should_die then
        return vlc.misc.should_die() and true or false
    end
    return false
end

-- ----------------------------------------------------------------------- the job

local Job = {}
Job.__index = Job

--- Start `subplug generate` for `media` in the background. Returns a Job.
function M.start_job(opts)
    local base, folder = opts.temp_base, nil
    if not base then
        base, folder = M.temp_base()
    end
    if not base then
        local job = setmetatable({ files = {}, args = {}, media = opts.media, state = M.new_state(),
            finished = true, reader = M.line_reader(), offset = 0 }, Job)
        job.state.failed = true
        job.state.error = { message = folder, hint = "Check that the temporary folder ($TMPDIR or /tmp) is writable." }
        return job
    end
    local files = { out = base .. ".jsonl", err = base .. ".err", pid = base .. ".pid", rc = base .. ".rc" }
    local env = { PYTHONUTF8 = "1", PYTHONIOENCODING = "utf-8" }
    for k, v in pairs(opts.config.env or {}) do
        env[k] = v
    end
    local args = M.generate_args(opts.config, opts.settings, opts.media, opts.out_dir, opts.overwrite)
    local command
    if is_windows() then
        command = M.windows_launch_command(args, env, files)
    else
        command = M.posix_launch_command(args, env, files)
    end
    local job = setmetatable({
        files = files, folder = folder, args = args, media = opts.media, out_dir = opts.out_dir,
        offset = 0, reader = M.line_reader(), started = os.time(),
        state = M.new_state(), cancelled = false,
    }, Job)
    local ok = os.execute(command)
    if ok == false or ok == nil then
        job.state.failed = true
        job.state.error = {
            message = "Could not start subplug.",
            hint = "Run 'subplug install vlc' again, then restart VLC.",
        }
        job.finished = true
    end
    return job
end

--- The pid of the running subplug (POSIX), once known.
function Job:pid()
    if not self._pid then
        local text = read_file(self.files.pid)
        self._pid = text and tonumber(text:match("%d+"))
    end
    return self._pid
end

--- Read what subplug printed since the last call; returns the new events.
function Job:poll()
    local events = {}
    local f = io.open(self.files.out, "rb")
    if f then
        f:seek("set", self.offset)
        local chunk = f:read("*a") or ""
        f:close()
        self.offset = self.offset + #chunk
        for _, line in ipairs(self.reader(chunk)) do
            if line:match("%S") then
                local event, err = M.json_decode(line)
                if type(event) == "table" and event.event then
                    events[#events + 1] = event
                    M.apply_event(self.state, event)
                else
                    self.state.noise[#self.state.noise + 1] = line
                    if err then
                        self.state.bad_lines = (self.state.bad_lines or 0) + 1
                    end
                end
            end
        end
    end
    if not self.finished then
        local rc = read_file(self.files.rc)
        if rc and rc:match("%-?%d+") then
            self.exit_code = tonumber(rc:match("%-?%d+"))
            self.finished = true
            -- The last lines may have arrived between reading the output and the rc file.
            for _, e in ipairs(self:poll()) do
                events[#events + 1] = e
            end
            self:finish()
        end
    end
    return events
end

function Job:finish()
    local state = self.state
    if self.cancelled then
        state.cancelled = true
    end
    if not state.job_done and not self.cancelled then
        state.failed = true
        if not state.error then
            local err = trim(read_file(self.files.err) or "")
            local last = err:match("([^\n]*error:[^\n]*)") or err:match("([^\n]+)%s*$") or ""
            state.error = {
                message = "subplug stopped unexpectedly (exit code " .. tostring(self.exit_code) .. ")"
                    .. (last ~= "" and (": " .. last) or "."),
                hint = "Run 'subplug doctor' in a terminal to check the installation.",
            }
        end
    end
end

--- Stop the job: SIGTERM (subplug keeps finished chunks for a later run), then
-- SIGKILL when it is still there after `grace` seconds.
function Job:cancel(grace)
    self.cancelled = true
    if self.finished then
        return
    end
    if is_windows() then
        local pid = self:pid()
        if pid then
            os.execute("taskkill /T /F /PID " .. pid .. " >NUL 2>&1")
        end
    else
        local deadline = os.time() + 5
        while not self:pid() and os.time() < deadline do
            M.sleep(0.05)
        end
        local pid = self:pid()
        if pid then
            os.execute("kill -TERM " .. pid .. " 2>/dev/null")
            local wait_until = os.time() + (grace or 5)
            while not exists(self.files.rc) and os.time() < wait_until do
                M.sleep(0.1)
            end
            if not exists(self.files.rc) then
                os.execute("kill -KILL " .. pid .. " 2>/dev/null")
            end
        end
    end
    local deadline = os.time() + 3
    while not self.finished and os.time() < deadline do
        self:poll()
        M.sleep(0.05)
    end
    self.finished = true
    self.state.cancelled = true
end

--- Remove the job's temporary files and its private folder.
function Job:cleanup()
    for _, path in pairs(self.files) do
        os.remove(path)
        os.remove(path .. ".tmp")
    end
    if self.folder then
        os.remove(self.folder)
    end
end

--- What subplug printed on stderr (for error reports).
function Job:stderr()
    return read_file(self.files.err) or ""
end

M.Job = Job

-- -------------------------------------------------------------- event handling

function M.new_state()
    return {
        percent = 0, stage = nil, done = 0, total = 0, outputs = {}, warnings = {},
        noise = {}, job_done = false, failed = false, error = nil, version = nil,
    }
end

local STAGE_LABELS = {
    probe = "Reading the file", decode = "Decoding audio", vad = "Finding speech",
    ["model-load"] = "Loading the model", transcribe = "Transcribing and translating",
    write = "Writing subtitles",
}

--- Fold one JSON-lines event (docs/jsonl.md) into the job state.
function M.apply_event(state, e)
    if e.v ~= nil and e.v ~= M.JSONL_VERSION then
        state.contract_mismatch = e.v
    end
    local kind = e.event
    if kind == "job-start" then
        state.version = e.version
    elseif kind == "stage" then
        state.stage = e.stage
    elseif kind == "progress" then
        local done = tonumber(e.done) or state.done
        -- The engine says "model-load" once and no stage after it: work on the parts
        -- has started when a part is done.
        if state.stage == "model-load" and done > state.done then
            state.stage = "transcribe"
        end
        state.done = done
        state.total = tonumber(e.total) or state.total
        state.percent = tonumber(e.percent) or state.percent
    elseif kind == "warning" then
        state.warnings[#state.warnings + 1] = e.message or e.reference or "warning"
    elseif kind == "file-done" then
        for _, o in ipairs(e.outputs or {}) do
            state.outputs[#state.outputs + 1] = o
        end
        state.cues = e.cues
        state.source_lang = e.source_lang
    elseif kind == "file-error" then
        state.failed = true
        state.error = e.error or { message = "subplug failed on this file." }
    elseif kind == "job-done" then
        state.job_done = true
        state.exit_code = e.exit_code
        if e.error then
            state.failed = true
            state.error = e.error
        elseif (tonumber(e.failed) or 0) > 0 then
            state.failed = true
        end
        if not state.failed then
            state.percent = 100
        end
    end
end

--- A one-line description of where the job is.
function M.progress_text(state)
    if state.cancelled then
        return "Stopped."
    end
    if state.job_done and not state.failed then
        return "Done."
    end
    local label = STAGE_LABELS[state.stage or ""] or "Starting subplug"
    if state.stage == "transcribe" and state.total > 0 then
        -- The part being worked on (all done: the last one).
        label = label .. string.format(" (part %d of %d)", math.min(state.done + 1, state.total), state.total)
    end
    return string.format("%s… %d%%", label, math.floor(state.percent + 0.5))
end

--- A text progress bar, e.g. "██████░░░░ 60%".
function M.progress_bar(percent, width)
    width = width or 30
    local filled = math.floor(width * math.max(0, math.min(100, percent)) / 100 + 0.5)
    return string.rep("\226\150\136", filled) .. string.rep("\226\150\145", width - filled)
end

--- The bilingual .ass among the outputs, else the first subtitle file.
function M.pick_subtitle(outputs)
    local first
    for _, o in ipairs(outputs) do
        if type(o) == "table" and o.path then
            if o.format == "ass" then
                return o.path
            end
            first = first or o.path
        end
    end
    return first
end

-- ------------------------------------------------------------ VLC: the player

--- The player API of this VLC: vlc.player (VLC 4) or vlc.input (VLC 3).
function M.player()
    return vlc.player or vlc.input
end

--- Local path of what is playing, or nil and a message.
function M.current_media()
    local P = M.player()
    local item = P and P.item and P.item()
    if not item then
        return nil, "Nothing is playing. Open a video or audio file first, then try again."
    end
    return M.uri_to_path(item:uri())
end

local function legacy_input()
    return vlc.object and vlc.object.input and vlc.object.input()
end

--- The subtitle tracks of the playing media: list of {id, name, selected}.
function M.spu_tracks()
    local P = M.player()
    if P.get_spu_tracks then
        local tracks = {}
        for _, t in ipairs(P.get_spu_tracks()) do
            tracks[#tracks + 1] = { id = t.id, name = t.name, selected = t.selected and true or false }
        end
        return tracks
    end
    local input = legacy_input()
    if not input then
        return {}
    end
    local selected = vlc.var.get(input, "spu-es")
    local values, names = vlc.var.get_list(input, "spu-es")
    local tracks = {}
    for i, id in ipairs(values or {}) do
        if id ~= -1 then
            tracks[#tracks + 1] = { id = id, name = names and names[i] or tostring(id), selected = id == selected }
        end
    end
    return tracks
end

--- Add `path` as a subtitle track of the playing media and select it.
-- Returns {ok, id, tracks} or nil and a message.
function M.add_and_select(path, timeout)
    local P = M.player()
    if not (P and P.add_subtitle) then
        return nil, "This VLC cannot add subtitle tracks from an extension."
    end
    local before = {}
    for _, t in ipairs(M.spu_tracks()) do
        before[t.id] = true
    end
    local ok, err = pcall(P.add_subtitle, path, true)
    if not ok then
        return nil, "VLC could not add the subtitles: " .. tostring(err)
    end
    local deadline = os.time() + (timeout or 5)
    local added
    repeat
        for _, t in ipairs(M.spu_tracks()) do
            if not before[t.id] then
                added = t
            end
        end
        if not added then
            M.sleep(0.05)
        end
    until added or os.time() > deadline
    if not added then
        return nil, "VLC did not show the new subtitle track. Open it with Subtitle > Add Subtitle File: " .. path
    end
    if not added.selected then
        if P.get_spu_tracks and P.toggle_spu_track then
            P.toggle_spu_track(added.id)
        else
            vlc.var.set(legacy_input(), "spu-es", added.id)
        end
    end
    local tracks, selected
    for _ = 1, 40 do
        tracks = M.spu_tracks()
        for _, t in ipairs(tracks) do
            if t.id == added.id and t.selected then
                selected = true
            end
        end
        if selected then
            break
        end
        M.sleep(0.05)
    end
    return { ok = selected == true, id = added.id, tracks = tracks }
end

-- ----------------------------------------------------------------- whole flow

--- Generate subtitles for what is playing and show them.
--
-- `ui` receives progress: ui.update(state, text) while the job runs, and may
-- provide ui.should_stop() (true stops the job) and ui.tick() (called each poll,
-- e.g. vlc.keep_alive). Options: settings, config, overwrite, use_existing
-- (load an existing .ass instead of generating), poll (seconds), media (path to
-- use instead of the playing item).
--
-- Returns a result table: {ok, media, subtitle, track, tracks, message, hint,
-- cancelled, warnings, out_dir, fallback}.
function M.generate_for_current(ui, opts)
    opts = opts or {}
    ui = ui or {}
    local settings = opts.settings or M.load_settings()
    local cfg = opts.config or M.load_config()
    local media, why = opts.media, nil
    if not media then
        media, why = M.current_media()
    end
    if not media then
        return { ok = false, message = why }
    end
    local result = { media = media, warnings = {} }
    local out_dir, fallback = M.output_dir(media, opts.fallback_root)
    result.out_dir, result.fallback = out_dir, fallback

    local existing = M.expected_ass(media, out_dir, settings)
    local subtitle
    if opts.use_existing ~= false and not opts.overwrite and exists(existing) then
        subtitle = existing
        result.reused = true
    else
        local job = M.start_job({
            config = cfg, settings = settings, media = media,
            out_dir = fallback and out_dir or nil, overwrite = opts.overwrite,
        })
        result.job = job
        while not job.finished do
            if ui.tick then
                ui.tick()
            end
            if M.should_die() or (ui.should_stop and ui.should_stop()) then
                job:cancel()
                break
            end
            job:poll()
            if ui.update then
                ui.update(job.state, M.progress_text(job.state))
            end
            if not job.finished then
                M.sleep(opts.poll or 0.2)
            end
        end
        local state = job.state
        result.warnings = state.warnings
        result.stderr = job:stderr()
        job:cleanup()
        if state.cancelled then
            result.ok, result.cancelled = false, true
            result.message = "Stopped. Finished parts are kept; run it again to continue."
            return result
        end
        if state.failed then
            local e = state.error or {}
            result.ok = false
            result.message = e.message or "subplug failed."
            result.hint = M.vlc_hint(e.reference, e.hint)
            result.reference = e.reference
            return result
        end
        subtitle = M.pick_subtitle(state.outputs)
        if not subtitle then
            result.ok = false
            result.message = "subplug finished but wrote no subtitle file."
            result.hint = #state.warnings > 0 and state.warnings[1] or nil
            return result
        end
        if not subtitle:match("^/") and not subtitle:match("^%a:[/\\]") and not subtitle:match("^\\\\") then
            subtitle = M.join(out_dir, M.basename(subtitle))
        end
    end
    result.subtitle = subtitle
    local added, err = M.add_and_select(subtitle)
    if not added then
        result.ok = false
        result.message = err
        return result
    end
    result.track, result.tracks = added.id, added.tracks
    result.ok = added.ok
    if not added.ok then
        result.message = "The subtitles were added but VLC did not select them; pick them in Subtitle > Sub Track."
    end
    return result
end

return M
