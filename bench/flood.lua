-- A flood of wrong logins for wrk (bench/auth.py): every request a new password for the user
-- given as the first argument, or a new unknown user when it is "*"; the second argument is
-- the pause in milliseconds between two requests of one connection, which bounds the rate.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)  -- RFC 4648; wrk's LuaJIT has no encoder of its own
    local bits = data:gsub(".", function(char)
        local byte, out = char:byte(), ""
        for i = 8, 1, -1 do
            out = out .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0")
        end
        return out
    end)
    local text = (bits .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(six)
        if #six < 6 then
            return ""
        end
        local value = 0
        for i = 1, 6 do
            value = value + (six:sub(i, i) == "1" and 2 ^ (6 - i) or 0)
        end
        return alphabet:sub(value + 1, value + 1)
    end)
    return text .. ({"", "==", "="})[#data % 3 + 1]
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
