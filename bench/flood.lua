-- A flood of wrong logins for wrk (bench/auth.py): every request a new password for the user
-- given as the first argument, or a new unknown user when it is "*"; the second argument is
-- the pause in milliseconds between two requests of one connection, which bounds the rate.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local bit = require("bit")  -- LuaJIT's, which wrk embeds

local function base64(data)  -- RFC 4648, three bytes at a time; wrk has no encoder of its own
    local out = {}
    for i = 1, #data, 3 do
        local a, b, c = data:byte(i, i + 2)
        local n = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
        for shift = 18, 0, -6 do
            local index = bit.band(bit.rshift(n, shift), 63)
            out[#out + 1] = alphabet:sub(index + 1, index + 1)
        end
        if not c then
            out[#out] = "="
        end
        if not b then
            out[#out - 1] = "="
        end
    end
    return table.concat(out)
end

local user, pause, count = "*", 10, 0

function init(args)
    user = args[1] or user
    pause = tonumber(args[2]) or pause
    math.randomseed(os.time())
end

function delay()
    return pause
end

function request()
    count = count + 1
    local name = user
    if name == "*" then
        name = "nobody" .. math.random(1, 1e9) .. "x" .. count
    end
    local login = name .. ":guess" .. math.random(1, 1e9) .. "x" .. count
    return wrk.format("GET", nil, {Authorization = "Basic " .. base64(login)})
end
